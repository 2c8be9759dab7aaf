"""`fit`'s epoch checkpoints: parameters, optimizer state and history as one atomic unit.

A checkpoint at path prefix ``P`` after epoch ``n`` is three files:

    P.e000n.params   the net's parameters           (written first, atomically)
    P.e000n.states   the optimizer's state          (then, atomically)
    P.json           the history, naming those two  (last, atomically: the commit)

``P.json`` is the only file that is ever replaced, and it is replaced last, so at any moment
it names a complete pair of files of one epoch: a run killed while epoch 2's files are being
written resumes from epoch 1, with epoch 1's parameters and optimizer state. Files of other
epochs are removed only after the commit, and half-written temporary files of a killed run
are removed by the next save or resume.

    >>> save_checkpoint("runs/ckpt/run", net, trainer, history)  # doctest: +SKIP
    >>> checkpoint_files("runs/ckpt/run")["params"]  # doctest: +SKIP
    'runs/ckpt/run.e0003.params'
"""
from __future__ import annotations

import glob
import json
import os
from typing import Dict, Optional

from . import fileio
from .devices import contexts_of

__all__ = ["save_checkpoint", "read_checkpoint", "resume_checkpoint", "checkpoint_files",
           "remove_checkpoint", "FORMAT"]

FORMAT = 2


def _epoch_file(path: str, epoch: int, kind: str) -> str:
    return f"{path}.e{epoch:04d}.{kind}"


def save_checkpoint(path: str, net, trainer, history) -> None:
    """Write the checkpoint of the epochs in ``history`` (see the module docstring)."""
    epoch = len(history.epochs)
    params, states = _epoch_file(path, epoch, "params"), _epoch_file(path, epoch, "states")
    # Through the module attribute, so that a fault-injection run can wrap the one writer.
    fileio.atomic_write(params, net.save_parameters)
    fileio.atomic_write(states, trainer.save_states)
    manifest = dict(history.to_dict())
    manifest["checkpoint"] = {"format": FORMAT, "epoch": epoch,
                              "params": os.path.basename(params),
                              "states": os.path.basename(states)}
    fileio.atomic_write_json(path + ".json", manifest)
    _remove_others(path, keep=(params, states))


def read_checkpoint(path: str) -> Optional[dict]:
    """The committed manifest at ``path`` (history and file names), or None when there is none.

    Raises:
        ValueError: the manifest is unreadable, or the files it names are missing (removed by
            hand): the message names them.
    """
    manifest_path = path + ".json"
    if not os.path.exists(manifest_path):
        return None
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"checkpoint {manifest_path} is unreadable ({error}); remove it to "
                         f"start afresh") from None
    files = checkpoint_files(path, manifest)
    missing = [p for p in files.values() if not os.path.exists(p)]
    if missing:
        raise ValueError(f"checkpoint {manifest_path} names files that are missing: "
                         f"{', '.join(missing)}; remove {manifest_path} to start afresh")
    return manifest


def resume_checkpoint(path: Optional[str], net, trainer, settings: dict) -> list:
    """Resume from the checkpoint at ``path`` (when there is one) if it was written with the
    same ``settings``: its parameters and optimizer state are loaded into ``net`` and
    ``trainer``; returns its epochs' rows (``[]`` without a checkpoint: start afresh).

    Raises:
        ValueError: the checkpoint was written with other settings (the devices, the feature
            cache and the timings may differ: how, not what, was computed).
    """
    manifest = read_checkpoint(path) if path else None
    if manifest is None:
        return []
    if _comparable(manifest["settings"]) != _comparable(settings):
        raise ValueError(f"checkpoint {path}.json was written with other settings; remove it or "
                         f"choose another checkpoint path")
    files = checkpoint_files(path, manifest)
    net.load_parameters(files["params"], ctx=contexts_of(net))
    trainer.load_states(files["states"])
    return list(manifest["epochs"])


def _comparable(settings: dict) -> dict:
    """Settings as they read back from JSON (tuples become lists), without how they ran."""
    skip = ("contexts", "cache_features", "feature_cache", "timings")
    return json.loads(json.dumps({k: v for k, v in settings.items() if k not in skip}))


def checkpoint_files(path: str, manifest: Optional[dict] = None) -> Dict[str, str]:
    """``{"params": ..., "states": ...}``: the files the committed checkpoint at ``path`` uses.

    Checkpoints written before the format had epoch files use ``P.params`` and ``P.states``.
    """
    if manifest is None:
        with open(path + ".json") as f:
            manifest = json.load(f)
    entry = manifest.get("checkpoint") if isinstance(manifest, dict) else None
    folder = os.path.dirname(path)
    if isinstance(entry, dict) and entry.get("format") == FORMAT:
        return {"params": os.path.join(folder, entry["params"]),
                "states": os.path.join(folder, entry["states"])}
    return {"params": path + ".params", "states": path + ".states"}


def _remove_others(path: str, keep=()) -> None:
    """Epoch files of ``path`` other than ``keep``, and temporaries that killed writers left."""
    keep = {os.path.abspath(k) for k in keep}
    pattern = glob.escape(path)
    for old in glob.glob(pattern + ".e*.params") + glob.glob(pattern + ".e*.states"):
        if os.path.abspath(old) not in keep:
            _remove(old)
    folder, name = os.path.split(os.path.abspath(path))
    for tmp in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.*"
                                      f"{fileio.TMP_SUFFIX}")):
        _remove(tmp)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def remove_checkpoint(path: str) -> None:
    """Remove every file of the checkpoint at ``path`` (and its folder, once empty)."""
    _remove_others(path)
    for ext in (".json", ".params", ".states", ".experiment.json"):
        _remove(path + ext)
    folder = os.path.dirname(path)
    if os.path.isdir(folder) and not os.listdir(folder):
        os.rmdir(folder)
