"""Where a backbone's weights come from (GluonCV's store, a local file or folder, random init)
and loading them so that every backbone parameter is accounted for."""
from __future__ import annotations

import glob
import hashlib
import os
import tempfile
import zipfile
from dataclasses import dataclass
from typing import Dict, List, Optional

import mxnet as mx

from .errors import error_message

__all__ = ["WeightsSource", "WeightsUnavailable", "WeightsMismatch", "resolve_weights",
           "read_params", "load_params", "store_root", "sha1_of"]

DATASET_TAGS = ("imagenet", "cifar10")


class WeightsUnavailable(FileNotFoundError):
    """Pretrained weights are neither on disk nor downloadable; the message says where to put
    them."""


class WeightsMismatch(ValueError):
    """A weights file does not fit the architecture."""


@dataclass(frozen=True)
class WeightsSource:
    """What initialised a backbone, for the record (``kind``: pretrained, file or random)."""
    kind: str
    path: Optional[str] = None
    sha1: Optional[str] = None
    dataset: Optional[str] = None

    def describe(self) -> str:
        if self.kind == "random":
            return "random init (Xavier)"
        where = f"{self.path} (sha1 {self.sha1[:12]})" if self.sha1 else str(self.path)
        return f"{self.dataset} weights from {where}" if self.dataset else f"weights from {where}"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "path": self.path, "sha1": self.sha1, "dataset": self.dataset,
                "description": self.describe()}


def sha1_of(path: str) -> str:
    return file_digest(path, "sha1")


def file_digest(path: str, algorithm: str = "sha1") -> str:
    """The hex digest of a file (``"sha1"``, ``"sha256"`` ...), read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def store_root(root: Optional[str] = None) -> str:
    """GluonCV's weight store: ``root``, else ``$MXNET_HOME/models``, else ``~/.mxnet/models``."""
    if root is not None:
        return os.path.expanduser(str(root))
    if "MXNET_HOME" in os.environ:
        return os.path.join(os.environ["MXNET_HOME"], "models")
    return os.path.expanduser(os.path.join("~", ".mxnet", "models"))


def resolve_weights(name: str, weights, *, family, root=None) -> WeightsSource:
    """Turn the ``weights`` argument of `load_backbone` into a concrete source.

    Raises:
        WeightsUnavailable: pretrained weights are not in the store and cannot be downloaded.
        FileNotFoundError: a weights path that does not exist.
        ValueError: a ``weights`` value of no known kind.
    """
    if weights is None:
        return WeightsSource("random")
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be 'default', 'imagenet', 'cifar10', a path or None, "
                         f"got {weights!r}")
    text = os.fspath(weights)
    if text == "default":
        text = family.pretrained_on
    if text in DATASET_TAGS:
        if text != family.pretrained_on:
            raise ValueError(f"weights={text!r}: GluonCV's pretrained weights for {name} are "
                             f"{family.pretrained_on!r}; pass weights={family.pretrained_on!r}, a "
                             f"file path, or None for random init")
        path = (family.pretrained_file(name, root) if family.pretrained_file
                else _pretrained_file(name, root))
        return WeightsSource("pretrained", path, sha1_of(path), text)
    path = os.path.expanduser(text)
    if os.path.isdir(path):
        path = _file_in_folder(name, path)
    elif not os.path.exists(path):
        raise FileNotFoundError(f"weights file {text!r} does not exist; expected a Gluon .params "
                                f"file for {name}, a folder holding one, 'imagenet'/'cifar10', "
                                f"or None")
    return WeightsSource("file", os.path.abspath(path), sha1_of(path), None)


def _file_in_folder(name: str, folder: str) -> str:
    pattern = os.path.join(glob.escape(folder), glob.escape(name))
    found = sorted(set(glob.glob(pattern + ".params")) | set(glob.glob(pattern + "-*.params")))
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(f"no weights for {name} in folder {folder!r}: expected a file "
                                f"named {name}.params or {name}-<anything>.params")
    raise ValueError(f"several weights files for {name} in {folder!r}: "
                     f"{', '.join(os.path.basename(f) for f in found)}; pass one file as weights=")


def _pretrained_file(name: str, root) -> str:
    """GluonCV's file for ``name`` in the store, downloaded (atomically) when absent."""
    from gluoncv.model_zoo import model_store
    from gluoncv.utils import check_sha1, download

    folder = store_root(root)
    file_name = f"{name}-{model_store.short_hash(name)}"
    path = os.path.join(folder, file_name + ".params")
    expected_sha1 = model_store._model_sha1[name]
    if os.path.exists(path) and check_sha1(path, expected_sha1):
        return path
    repo = os.environ.get("MXNET_GLUON_REPO", model_store.apache_repo_url)
    url = model_store._url_format.format(repo_url=repo.rstrip("/") + "/", file_name=file_name)
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            zip_path = download(url, path=os.path.join(tmp, file_name + ".zip"), overwrite=True)
            with zipfile.ZipFile(zip_path) as archive:
                archive.extract(file_name + ".params", tmp)
            if not check_sha1(os.path.join(tmp, file_name + ".params"), expected_sha1):
                raise ValueError("the downloaded file has another sha1 than GluonCV's")
            os.replace(os.path.join(tmp, file_name + ".params"), path)
    except Exception as error:  # no network, proxy, disk: the fix is the same, say it
        raise WeightsUnavailable(
            f"GluonCV's pretrained weights for {name} are not on this machine and could not be "
            f"downloaded ({type(error).__name__}: {error}). Put the file at {path} "
            f"(sha1 {expected_sha1}; it is {url}, unzipped), or pass weights='/path/to/"
            f"{name}.params' (a Gluon parameter file for {name}), or weights=None for random "
            f"init") from None
    return path


def read_params(path: str, *, foreign=None) -> Dict[str, mx.nd.NDArray]:
    """The parameters of a Gluon ``.params`` file by name; a ``.pth`` file (PyTorch) through
    ``foreign(path)``, the family's converter, when it has one."""
    if str(path).endswith(".pth"):
        if foreign is None:
            raise WeightsMismatch(f"{path} is a PyTorch file; only the EfficientNet-Lite "
                                  f"backbones read those (others need a Gluon .params file)")
        return foreign(str(path))
    try:
        loaded = mx.nd.load(path)
    except Exception as error:
        raise WeightsMismatch(f"cannot read weights file {path!r}: it is not a Gluon parameter "
                              f"file (mxnet said: {error_message(error, limit=200)})") from None
    if not isinstance(loaded, dict) or not loaded:
        raise WeightsMismatch(f"weights file {path!r} holds no named parameters; expected a file "
                              f"written by save_parameters")
    # Files written by export() prefix names with arg:/aux:.
    return {key.split(":", 1)[-1]: value for key, value in loaded.items()}


def load_params(net, stored: Dict[str, mx.nd.NDArray], *, path: str, name: str,
                head_names: List[str], ctx) -> List[str]:
    """Load ``stored`` (read from ``path``) into ``net`` by structural parameter names.

    Parameters under ``head_names`` (prefixes) may be absent or of another shape and are then
    left alone; every other parameter of ``net`` must be in the file with its shape, and the file
    may hold nothing else.

    Returns:
        The head parameter names that were loaded (those with matching shapes).

    Raises:
        WeightsMismatch: listing missing, unexpected and mis-shaped parameters.
    """
    params = net._collect_params_with_prefix()
    is_head = lambda key: any(key == h or key.startswith(h + ".") for h in head_names)  # noqa: E731
    missing = [k for k in params if k not in stored and not is_head(k)]
    unexpected = [k for k in stored if k not in params and not is_head(k)]
    misshaped = [f"{k}: file {stored[k].shape} vs model {params[k].shape}" for k in params
                 if k in stored and not is_head(k) and not _fits(params[k].shape, stored[k].shape)]
    if missing or unexpected or misshaped:
        raise WeightsMismatch(_mismatch_message(path, name, missing, unexpected, misshaped))
    loaded_head = []
    for key, param in params.items():
        if key not in stored:
            continue
        if is_head(key):
            if not _fits(param.shape, stored[key].shape):
                continue
            loaded_head.append(key)
        param._load_init(stored[key], ctx)
    return loaded_head


def _fits(model_shape, file_shape) -> bool:
    """Same shape, where 0 in the model's shape (not yet inferred) matches anything."""
    return len(model_shape) == len(file_shape) and all(
        m in (0, f) for m, f in zip(model_shape, file_shape))


def _mismatch_message(path, name, missing, unexpected, misshaped) -> str:
    def few(items):
        return ", ".join(items[:6]) + (f", ... ({len(items)} in all)" if len(items) > 6 else "")
    parts = []
    if missing:
        parts.append(f"{len(missing)} backbone parameters missing from the file ({few(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} parameters in the file that {name} does not have "
                     f"({few(unexpected)})")
    if misshaped:
        parts.append(f"{len(misshaped)} with another shape ({few(misshaped)})")
    return (f"weights file {path!r} does not fit {name}: " + "; ".join(parts)
            + f". Expected a file saved from {name} (GluonCV's layout or gluonft's); is it a file "
              f"for another architecture?")
