"""The notebooks' first cell on a Colab-like Python (GLUONFT_COLAB_PYTHON: Python 3.12 with numpy
2 and PyTorch installed first, as Colab has them; .ci/run makes one): it installs gluonft
without downgrading numpy or breaking torch. The own-photos notebook then runs in that Python's
kernel (tests/test_notebook_own_images.py, which runs it there when GLUONFT_COLAB_PYTHON is set)."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from .notebooks import COLAB_PYTHON, ROOT, nbformat

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


def test_the_install_cell_keeps_numpy_and_torch():
    before = _versions()
    assert before["numpy"].startswith("2.") and not before["gluonft"], before
    notebook = nbformat.read(ROOT / "notebooks" / "own_images.ipynb", as_version=4)
    install = notebook.cells[1].source
    assert "pip" in install and "--no-deps" in install
    out = _colab(install, GLUONFT_SOURCE=str(ROOT))
    assert out.returncode == 0, out.stderr[-3000:]
    after = _versions()
    assert after == {**before, "gluonft": True}, (before, after)  # numpy and torch untouched
    # both libraries in one process, each computing
    both = _colab("import torch, gluonft, mxnet as mx\n"
                  "print(float((mx.nd.ones((2, 2)) * 2).sum().asscalar()), "
                  "float(torch.ones(3).sum()))")
    assert both.returncode == 0, both.stderr[-3000:]
    assert both.stdout.split()[-2:] == ["8.0", "3.0"]
