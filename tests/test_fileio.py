"""File safety: strict JSON, the folder lock across processes, leftovers of killed writers."""
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gluonft.fileio import (
    FolderBusy,
    FolderLock,
    atomic_write_json,
    check_writable_folder,
    remove_stale_temporaries,
)

ROOT = Path(__file__).resolve().parents[1]
HOLD = ("import sys, time\nfrom gluonft.fileio import FolderLock\n"
        "lock = FolderLock(sys.argv[1]).acquire()\nprint('held', flush=True)\ntime.sleep(120)\n")


def _reject_constant(name):
    raise ValueError(f"not strict JSON: {name}")


def test_json_results_are_strict_json_without_nan(tmp_path):
    path = atomic_write_json(tmp_path / "r.json", {"loss": float("nan"), "acc": 0.5,
                                                   "curve": [1.0, float("inf"), -float("inf")]})
    data = json.loads(Path(path).read_text(), parse_constant=_reject_constant)
    assert data == {"loss": None, "acc": 0.5, "curve": [1.0, None, None]}


def _holder(folder):
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_live_holder_is_named_and_a_killed_one_is_recognised(tmp_path):
    folder = tmp_path / "out"
    child = _holder(folder)
    try:
        with pytest.raises(FolderBusy, match=re.escape(f"{folder} is in use by another run "
                                                       f"(pid {child.pid} on ")):
            FolderLock(folder).acquire()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    # The OS released the killed holder's lock; its note in the lock file names it.
    with FolderLock(folder) as lock:
        assert lock.stale_holder["pid"] == child.pid
        assert "no longer running" in lock.describe_stale()
    with FolderLock(folder) as lock:  # released cleanly last time: nothing stale
        assert lock.stale_holder is None


def test_temporaries_of_killed_writers_are_removed_and_nothing_else(tmp_path):
    (tmp_path / "curves").mkdir()
    leftovers = [tmp_path / ".results.json.x1y2.tmp", tmp_path / "curves" / ".a.png.zz.tmp"]
    kept = [tmp_path / "results.json", tmp_path / "notes.tmp", tmp_path / ".hidden"]
    for path in leftovers + kept:
        path.write_text("x")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted(map(str, leftovers))
    assert all(p.exists() for p in kept) and not any(p.exists() for p in leftovers)


def test_an_output_folder_under_a_file_is_refused_at_once(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="file is a file, not a folder"):
        check_writable_folder(tmp_path / "file" / "model")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        check_writable_folder(tmp_path / "file")
    assert check_writable_folder(tmp_path / "new" / "deeper") == str(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()  # checked, not created


def test_a_model_folder_and_its_files_are_readable_by_other_accounts(tmp_path):
    """A service running as another user reads the model: the folder gets a folder's usual
    permissions (0777 less the umask), not mkdtemp's private 0700."""
    import os
    import stat

    import gluonft
    from gluonft.fileio import process_umask
    net = gluonft.load_backbone("mobilenet0.25", classes=2, weights=None, seed=0)
    old = os.umask(0o022)
    try:
        folder = gluonft.save_classifier(net, tmp_path / "model", classes=["a", "b"],
                                         image_size=32, extra={"stored_size": 32, "fit": "crop"})
        assert process_umask() == 0o022
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    for name in ("model.json", "model.params"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o644


def test_the_umask_is_read_without_being_changed(monkeypatch, tmp_path):
    """Setting the umask to 0 to read it would let another thread's new file be created
    world-writable in that moment: it is never changed after import."""
    import os

    from gluonft import fileio
    expected = fileio.process_umask()

    def no_umask_changes(mask):
        raise AssertionError(f"os.umask({mask:o}) called: the process umask was changed")
    monkeypatch.setattr(os, "umask", no_umask_changes)
    assert fileio.process_umask() == expected
    atomic_write_json(tmp_path / "result.json", {"ok": 1})
    assert json.loads((tmp_path / "result.json").read_text()) == {"ok": 1}
    with FolderLock(tmp_path):
        pass
