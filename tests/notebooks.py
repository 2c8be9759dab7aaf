"""Run a notebook of notebooks/ headlessly, as `jupyter nbconvert --to html --execute` does.

Importing this module skips the importing test module when the Jupyter pieces are missing.
"""
import os
import subprocess
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[notebook]'")
nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[notebook]'")
pytest.importorskip("ipykernel", reason="pip install -e '.[notebook]'")

ROOT = Path(__file__).resolve().parents[1]
# A Colab-like Python (3.12, numpy 2 and PyTorch installed first; .ci/run makes one), relative
# to the project folder or absolute; "" when not given.
COLAB_PYTHON = str(ROOT / os.environ["GLUONFT_COLAB_PYTHON"]) if os.environ.get(
    "GLUONFT_COLAB_PYTHON") else ""

# Executes a notebook in another Python's own kernel (argv: notebook, output, timeout, the
# folder it runs in).
_DRIVER = ("import sys, nbformat, nbclient\n"
           "nb = nbformat.read(sys.argv[1], as_version=4)\n"
           "try:\n"
           "    nbclient.NotebookClient(nb, timeout=int(sys.argv[3]), kernel_name='python3',"
           " resources={'metadata': {'path': sys.argv[4]}}).execute()\n"
           "finally:\n"
           "    nbformat.write(nb, sys.argv[2])\n")


def require(*paths: Path) -> None:
    """Skip the test when a file the notebook reads from ../shared is absent."""
    for path in paths:
        if not path.exists():
            pytest.skip(f"{path} not found in ../shared")


def execute(notebook_path: Path, env: dict, *, timeout: int = 600, python: str = ""):
    """The executed notebook node; ``env`` is set for the kernel (it inherits this process's
    environment) and restored afterwards. Raises CellExecutionError on the first failing cell.

    ``python``: run it in that interpreter's own kernel instead (a Colab-like Python: the
    notebook's install cell puts gluonft there first when it is missing); a failing cell
    fails with that run's last output."""
    if python:
        return _execute_in(python, notebook_path, env, timeout)
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


def _execute_in(python: str, notebook_path: Path, env: dict, timeout: int):
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"executed-{os.getpid()}-{notebook_path.name}"
    done = subprocess.run(
        [python, "-c", _DRIVER, str(notebook_path), str(out), str(timeout),
         str(notebook_path.parent)], cwd=notebook_path.parent, capture_output=True, text=True,
        env={**os.environ, **{k: str(v) for k, v in env.items()}}, timeout=timeout * 3)
    try:
        assert done.returncode == 0, f"{notebook_path.name} in {python}:\n{done.stderr[-3000:]}"
        return nbformat.read(out, as_version=4)
    finally:
        out.unlink(missing_ok=True)


def outputs(notebook):
    return [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]


def stream_text(notebook):
    return "".join(o.get("text", "") for o in outputs(notebook) if o.output_type == "stream")


def code(notebook):
    return [c for c in notebook.cells if c.cell_type == "code"]


def errors(notebook):
    return [o for o in outputs(notebook) if o.output_type == "error"]
