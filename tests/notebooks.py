"""Run a notebook of notebooks/ headlessly, as `jupyter nbconvert --to html --execute` does.

Importing this module skips the importing test module when the Jupyter pieces are missing.
"""
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[notebook]'")
nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[notebook]'")
pytest.importorskip("ipykernel", reason="pip install -e '.[notebook]'")

ROOT = Path(__file__).resolve().parents[1]


def require(*paths: Path) -> None:
    """Skip the test when a file the notebook reads from ../shared is absent."""
    for path in paths:
        if not path.exists():
            pytest.skip(f"{path} not found in ../shared")


def execute(notebook_path: Path, env: dict, *, timeout: int = 600):
    """The executed notebook node; ``env`` is set for the kernel (it inherits this process's
    environment) and restored afterwards. Raises CellExecutionError on the first failing cell."""
    notebook = nbformat.read(notebook_path, as_version=4)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update({k: str(v) for k, v in env.items()})
    try:
        client = nbclient.NotebookClient(
            notebook, timeout=timeout, kernel_name="python3",
            resources={"metadata": {"path": str(notebook_path.parent)}})
        client.execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return notebook


def outputs(notebook):
    return [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]


def stream_text(notebook):
    return "".join(o.get("text", "") for o in outputs(notebook) if o.output_type == "stream")


def code(notebook):
    return [c for c in notebook.cells if c.cell_type == "code"]


def errors(notebook):
    return [o for o in outputs(notebook) if o.output_type == "error"]
