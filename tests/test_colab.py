"""The notebooks' first cell on a Colab-like Python (GLUONFT_COLAB_PYTHON: Python 3.12 with numpy
2 and PyTorch installed first, as Colab has them; .ci/run makes one): it installs gluonft
without downgrading numpy or breaking torch, and the own-photos notebook then runs there."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from .notebooks import ROOT, nbformat

COLAB_PYTHON = str(ROOT / os.environ["GLUONFT_COLAB_PYTHON"]) if os.environ.get(
    "GLUONFT_COLAB_PYTHON") else ""  # relative to the project folder, or absolute
pytestmark = pytest.mark.skipif(
    not Path(COLAB_PYTHON).is_file(), reason="no Colab-like Python: GLUONFT_COLAB_PYTHON=PATH "
    "(.ci/run makes one with numpy 2 and torch)")

VERSIONS = ("import json, numpy, torch, importlib.util; print(json.dumps({'numpy': "
            "numpy.__version__, 'torch': torch.__version__, "
            "'gluonft': importlib.util.find_spec('gluonft') is not None}))")


def _colab(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([COLAB_PYTHON, "-c", code], capture_output=True, text=True,
                          timeout=1200, cwd=ROOT / "notebooks", env={**os.environ, **env})


def _versions() -> dict:
    out = _colab(VERSIONS)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_install_cell_keeps_numpy_and_torch_and_the_notebook_runs(shared, tmp_path):
    before = _versions()
    assert before["numpy"].startswith("2.") and not before["gluonft"], before
    notebook = nbformat.read(ROOT / "notebooks" / "own_images.ipynb", as_version=4)
    install = notebook.cells[1].source
    assert "pip" in install and "--no-deps" in install
    out = _colab(install, GLUONFT_SOURCE=str(ROOT))
    assert out.returncode == 0, out.stderr[-3000:]
    after = _versions()
    assert after == {**before, "gluonft": True}, (before, after)  # numpy and torch untouched
    # the whole notebook in that Python's own kernel, torch imported first as Colab users do
    run = ("import torch, nbformat, nbclient\n"
           "nb = nbformat.read('own_images.ipynb', as_version=4)\n"
           "nbclient.NotebookClient(nb, timeout=900, kernel_name='python3',"
           " resources={'metadata': {'path': '.'}}).execute()\n"
           "text = ''.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code'"
           " for o in c.outputs)\n"
           "print(text)\n")
    out = _colab(run, GLUONFT_SHARED=str(shared), GLUONFT_MODEL_DIR=str(tmp_path / "model"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"numpy {before['numpy']}" in out.stdout and "on cpu(0)" in out.stdout
    accuracy = float(out.stdout.split("test accuracy: ")[1].split()[0])
    assert accuracy > 0.75, accuracy  # as in the main notebook test: chance is 0.10
