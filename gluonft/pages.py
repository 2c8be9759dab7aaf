"""Self-contained HTML pages from Jinja2 templates: the bench report, the evaluation report and
the service's page share one base page (`templates/page.html`), one style sheet and one set of
filters. A page is one file: images are ``data:`` URIs, the CSS is inline, no script loads
anything from elsewhere, so it opens from disk, an e-mail or a submission system offline.

Every value reaches the page escaped (autoescape); a template that names a missing value is an
error (StrictUndefined), not a blank cell.
"""
from __future__ import annotations

import base64
import functools
from pathlib import Path
from typing import Optional, Sequence

import jinja2

__all__ = ["TEMPLATES", "environment", "render", "data_uri", "pct", "thousands", "duration",
           "words"]

TEMPLATES = Path(__file__).resolve().parent / "templates"


def data_uri(mime: str, data: bytes) -> str:
    """``data:<mime>;base64,...``: an image inside the page."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def pct(value: Optional[float], digits: int = 2) -> str:
    """0.8123 -> ``81.23%``; None -> ``-``."""
    return "-" if value is None else f"{100 * float(value):.{digits}f}%"


def thousands(value) -> str:
    """12345 -> ``12,345``; None -> ``-``."""
    return "-" if value is None else f"{int(value):,}"


def duration(value: Optional[float]) -> str:
    """Seconds in words: ``42.0 s``, ``3 min 05 s``, ``2 h 04 min``."""
    if value is None:
        return "-"
    value = float(value)
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds:02d} s" if minutes < 60 else \
        f"{minutes // 60} h {minutes % 60:02d} min"


def words(value) -> str:
    """A saved value in words for a key/value table: ``{"head": 0.05}`` -> ``head 0.05``."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {words(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(words(v) for v in value) + "]"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return "-" if value is None else str(value)


@functools.lru_cache(maxsize=None)
def environment(folders: Sequence[str] = ()) -> jinja2.Environment:
    """The Jinja2 environment over ``folders`` (searched first) and gluonft's own templates."""
    loader = jinja2.FileSystemLoader([*map(str, folders), str(TEMPLATES)])
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(pct=pct, thousands=thousands, duration=duration, words=words,
                       data_uri=data_uri)
    return env


def render(name: str, *, folders: Sequence[str] = (), **context) -> str:
    """Render template ``name`` (looked up in ``folders``, then gluonft's) with ``context``."""
    return environment(tuple(map(str, folders))).get_template(name).render(**context)
