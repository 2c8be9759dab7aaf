"""File safety, in one place: atomic writes, strict JSON, a lock per output folder, and the
record of library versions that goes beside every saved result.

Everything gluonft writes for a user (results, checkpoints, caches, model folders, reports)
goes through `atomic_write`: a temporary file in the destination folder, then one
``os.replace``; a run killed at any moment leaves the old file or the new one, never half of
one. A killed writer cannot remove its temporary file, so the next run that holds the folder's
`FolderLock` removes such leftovers (`remove_stale_temporaries`).

    >>> with FolderLock("runs/smoke"):
    ...     atomic_write_json("runs/smoke/results.json", {"records": []})
"""
from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import math
import os
import platform
import socket
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence

from .version import __version__

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "atomic_write_csv",
           "finite_json",
           "FolderLock", "FolderBusy", "check_writable_folder", "remove_stale_temporaries",
           "library_versions", "make_shared_temp_dir", "process_umask",
           "TMP_SUFFIX"]

TMP_SUFFIX = ".tmp"  # temporary files are ".<name>.<random>.tmp" beside their destination
LOCK_NAME = ".gluonft.lock"


def atomic_write(path, write: Callable[[str], None]) -> str:
    """Call ``write(tmp_path)`` and move the result to ``path`` in one step.

    The temporary file sits in the destination folder (created if needed), so ``os.replace``
    is a rename on one file system; it is removed if ``write`` fails.

    Args:
        path: the destination.
        write: writes the complete file at the path it is given.

    Returns:
        ``path``.

    Example:
        >>> atomic_write("best.params", net.save_parameters)  # doctest: +SKIP
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.",
                               suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes the file private (0600); results are shared like any new file.
        os.chmod(tmp, 0o666 & ~process_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _umask_at_import() -> int:
    # os.umask can only be read by setting it; done once here, while importing (before a
    # program starts threads of its own), never again: another thread creating a file in the
    # moment the mask is 0 would make it world-writable
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK_AT_IMPORT = _umask_at_import()


def process_umask() -> int:
    """The process umask, read without changing it (Linux reports it in /proc/self/status;
    elsewhere the value it had when gluonft was imported)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return _UMASK_AT_IMPORT


def make_shared_temp_dir(*, prefix: str, dir) -> str:
    """``tempfile.mkdtemp`` with a folder's usual permissions (0777 less the umask) instead of
    0700: a folder it becomes (a model folder, an extracted data set) is read by other
    accounts like any other (a service running as another user)."""
    tmp = tempfile.mkdtemp(prefix=prefix, dir=dir)
    os.chmod(tmp, 0o777 & ~process_umask())
    return tmp


def atomic_write_text(path, text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` atomically and durably; returns ``path``."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return atomic_write(path, write)


def atomic_write_csv(path, rows, columns) -> str:
    """Write dict ``rows`` as CSV with the header ``columns`` (other keys left out),
    atomically; returns ``path``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def finite_json(value):
    """``value`` with every NaN / infinite float replaced by None (JSON ``null``).

    Strict JSON has no NaN: Python writes the token ``NaN``, which other parsers (browsers,
    jq, pandas with ``strict``) reject. A non-finite number in a result means "no valid value".

    Example:
        >>> finite_json({"loss": float("nan"), "acc": [0.5, float("inf")]})
        {'loss': None, 'acc': [0.5, None]}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def _jsonable(value):
    if hasattr(value, "to_dict"):
        return finite_json(value.to_dict())
    if isinstance(value, (set, frozenset)):
        return finite_json(sorted(value))
    try:  # numpy scalars
        return finite_json(value.item())
    except AttributeError:
        raise TypeError(f"{type(value).__name__} is not JSON serialisable: {value!r}") from None


def atomic_write_json(path, data) -> str:
    """Write ``data`` as indented, strict JSON (no NaN: see `finite_json`) atomically.

    Example:
        >>> atomic_write_json("config.json", {"epochs": 3})  # doctest: +SKIP
        'config.json'
    """
    # Serialise before touching the disk: a value JSON cannot hold fails with nothing written.
    text = json.dumps(finite_json(data), indent=1, default=_jsonable, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def remove_stale_temporaries(folder, *, recursive: bool = True) -> List[str]:
    """Remove the temporary files killed writers left in ``folder``; returns their paths.

    Only call it while holding the folder's `FolderLock`: then no live writer of gluonft uses
    the folder, and every ``.<name>.<random>.tmp`` file in it belongs to a dead one.
    """
    removed = []
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return removed
    walker = os.walk(folder) if recursive else [(folder, [], os.listdir(folder))]
    for where, _, names in walker:
        for name in names:
            if name.startswith(".") and name.endswith(TMP_SUFFIX):
                path = os.path.join(where, name)
                try:
                    os.remove(path)
                    removed.append(path)
                except FileNotFoundError:
                    pass
    return removed


def check_writable_folder(path, *, what: str = "output folder") -> str:
    """Fail now, before minutes of work, when folder ``path`` cannot be created or written.

    Returns:
        ``path`` as given.

    Raises:
        NotADirectoryError: ``path``, or a folder above it, is a file.
        PermissionError: the nearest existing folder is not writable.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{what} {path} is a file, not a folder; choose another path")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        raise NotADirectoryError(f"{what} {path}: {existing} is a file, not a folder; choose "
                                 f"another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {path}: {existing} is not writable; choose another "
                              f"path")
    return path


class FolderBusy(RuntimeError):
    """Another live process holds the folder's lock; the message says which."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class FolderLock:
    """An exclusive lock on an output folder, held for the life of a run.

    The lock is ``fcntl.flock`` on ``<folder>/.gluonft.lock``: the operating system releases it
    when its process ends, however it ends, so a killed run never leaves a lock that blocks the
    next one. The file also says who holds it (pid, host, command, start time); it is emptied
    on a clean release, so a file that still names a holder when the lock is free was left by
    a killed run: `stale_holder` then says who, for the log.

    Args:
        folder: the folder (created).
        lock_file: the lock file's path instead of ``<folder>/.gluonft.lock`` (for a folder
            that is replaced by a rename, lock a file beside it).

    Raises:
        FolderBusy: on entering, when a live process holds the lock (its pid and command named).

    Example:
        >>> with FolderLock("runs/cifar") as lock:  # doctest: +SKIP
        ...     run_grid(...)
    """

    def __init__(self, folder, *, lock_file: Optional[str] = None):
        self.folder = os.fspath(folder)
        self.path = lock_file or os.path.join(self.folder, LOCK_NAME)
        self.stale_holder: Optional[dict] = None
        self._fd: Optional[int] = None

    def acquire(self) -> "FolderLock":
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~process_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _read_holder(fd)
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise FolderBusy(f"{self.folder} is in use by another run ({_describe(holder)}); "
                             f"wait for it to finish, stop it, or choose another output "
                             f"folder") from None
        previous = _read_holder(fd)
        if previous and not (previous.get("pid") == os.getpid()
                             and previous.get("host") == socket.gethostname()):
            self.stale_holder = previous  # it held the lock and did not release it: killed
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "command": " ".join(sys.argv), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # empty: released cleanly
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def describe_stale(self) -> Optional[str]:
        """One line about a lock left by a killed run, or None."""
        if not self.stale_holder:
            return None
        pid = self.stale_holder.get("pid")
        state = "no longer running" if isinstance(pid, int) and not _pid_alive(pid) \
            else "not holding it"
        return (f"took over the lock of {self.folder} left by a run that did not finish "
                f"({_describe(self.stale_holder)}; {state})")


def _read_holder(fd: int) -> dict:
    try:
        data = os.pread(fd, 4096, 0)
        holder = json.loads(data.decode()) if data.strip() else {}
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "holder unknown"
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: "
            f"{holder.get('command') or '?'}")


# --- the versions record ----------------------------------------------------------------------

def library_versions() -> Dict[str, Optional[str]]:
    """Versions of Python and the libraries that produce a result (None: not installed).

    Example:
        >>> library_versions()["mxnet"]  # doctest: +SKIP
        '1.9.1'
    """
    out: Dict[str, Optional[str]] = {"python": platform.python_version()}
    # Installed distributions first: gluoncv 0.10.5.post0 reports __version__ '0.11.0'; gluonft
    # is read from the code that runs, which may be a checkout and not an installed package.
    for module, dists in (("mxnet", ("mxnet", "mxnet-cu112")), ("gluoncv", ("gluoncv",)),
                          ("numpy", ("numpy",)), ("matplotlib", ("matplotlib",))):
        out[module] = _version(module, dists)
    out["gluonft"] = __version__
    return out


def _version(module: str, dists: Sequence[str]) -> Optional[str]:
    from importlib import import_module, metadata

    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    try:
        return str(import_module(module).__version__)
    except Exception:  # not installed, or no __version__: say so rather than guess
        return None
