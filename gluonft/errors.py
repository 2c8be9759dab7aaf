"""The readable part of an error: MXNet's messages start with a C++ traceback."""
from __future__ import annotations

__all__ = ["error_message", "one_line", "short_list", "SHOWN"]

SHOWN = 10  # names a message lists before "..."

_NOISE = ("Traceback (most recent call last)", "Stack trace", "[bt]", "File ")


def error_message(error: BaseException, *, limit: int = 400) -> str:
    """The first meaningful line of ``error``'s message, without MXNet's traceback lines.

    Example:
        >>> error_message(RuntimeError('Traceback (most recent call last):\\n  File "x.cc", '
        ...                            'line 3\\nMXNetError: Check failed: bad header'))
        'Check failed: bad header'
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(_NOISE)] or lines
    # MXNet prefixes the message with its exception's name; the caller says what failed.
    text = useful[0] if useful else "(no message)"
    if text.startswith("MXNetError: "):
        text = text[len("MXNetError: "):]
    return text if len(text) <= limit else text[:limit - 3] + "..."


def one_line(error: BaseException, *, limit: int = 400) -> str:
    """``"Type: first meaningful line"`` of an exception, for records and logs.

    Example:
        >>> one_line(ValueError("bad\\nmore"))
        'ValueError: bad'
    """
    return f"{type(error).__name__}: {error_message(error, limit=limit)}"


def short_list(names, *, shown: int = SHOWN) -> str:
    """The first ``shown`` names, comma-separated, then how many there are in all.

    Example:
        >>> short_list(["a", "b", "c"], shown=2)
        'a, b ... (3 in all)'
    """
    names = list(names)
    listed = ", ".join(str(n) for n in names[:shown])
    return listed + (f" ... ({len(names)} in all)" if len(names) > shown else "")
