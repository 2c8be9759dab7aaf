"""gluonft gives MXNet every physical core (gluonft.threads), in a fresh Python each time."""
import os
import subprocess
import sys

import numpy as np
import pytest

from gluonft.compat import APPLIED
from gluonft.threads import physical_cores

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("OMP_NUM_THREADS", "GLUONFT_SET_OMP_NUM_THREADS")}
    environ.update(env)
    return subprocess.run([sys.executable, "-W", "always", "-c", code], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=120)


def test_physical_cores_counts_the_cores_this_process_may_use():
    cores = physical_cores()
    assert 1 <= cores <= len(os.sched_getaffinity(0))


def test_importing_gluonft_first_sets_omp_num_threads_to_the_cores():
    out = _python("import os, gluonft, mxnet; print(os.environ['OMP_NUM_THREADS'])")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == str(physical_cores())


def test_a_users_setting_stands():
    out = _python("import os, gluonft; print(os.environ['OMP_NUM_THREADS'])",
                  OMP_NUM_THREADS="1")
    assert out.stdout.split()[-1] == "1"


def test_a_child_of_a_gluonft_process_does_not_take_its_setting_for_the_users():
    """A script that imported gluonft and then starts `python -m gluonft.launch`: the launcher
    inherits OMP_NUM_THREADS, and must still share the cores out among its workers (2 workers
    with 2 threads each on 2 cores trained 9x slower)."""
    code = ("import os, subprocess, sys, gluonft\n"
            "child = 'from gluonft.threads import user_set_threads; print(user_set_threads())'\n"
            "print(subprocess.run([sys.executable, '-c', child], capture_output=True, "
            "text=True).stdout.strip())\n"
            "os.environ['OMP_NUM_THREADS'] = '7'\n"
            "print(subprocess.run([sys.executable, '-c', child], capture_output=True, "
            "text=True).stdout.strip())")
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]


def test_mxnet_imported_first_still_gets_every_core():
    """The startup hook (gluonft-mxnet.pth) runs gluonft.threads before MXNet loads, whichever
    is imported first."""
    out = _python("import mxnet, os, gluonft; print(os.environ['OMP_NUM_THREADS'])")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == str(physical_cores())
    assert "ThreadsWarning" not in out.stderr


# Without the hook MXNet loads before gluonft only where numpy still has every name it reads at
# import time (numpy < 1.24).
@pytest.mark.skipif(bool(APPLIED["numpy"]), reason=f"numpy {np.__version__}: MXNet cannot "
                    f"be imported before gluonft without the startup hook")
def test_without_the_hook_mxnet_imported_first_gets_a_warning_where_it_halves_the_cores():
    out = _python("import mxnet, gluonft", GLUONFT_NO_HOOK="1")
    assert out.returncode == 0, out.stderr
    halved = max(1, (os.cpu_count() or 1) // 2)
    if physical_cores() > halved:  # e.g. 2 cores without hyper-threading
        assert "ThreadsWarning" in out.stderr and "Import gluonft first" in out.stderr
    else:
        assert "ThreadsWarning" not in out.stderr
