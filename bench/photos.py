"""Real photo folders for the benchmarks, made from ``../shared`` without copying it: the
CIFAR-10 JPEG archive extracted once, and folders of symbolic links to some of its photos."""
from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Iterable

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
CIFAR10_JPG = SHARED / "data" / "cifar10-jpg.tar.gz"

__all__ = ["SHARED", "CIFAR10_JPG", "cifar10_jpg", "link_photos"]


def cifar10_jpg(work: Path, *, who: str) -> Path:
    """work/cifar10-jpg: the archive's train/<class>/ and test/<class>/ (extracted once)."""
    root = work / "cifar10-jpg"
    done = root / ".extracted"
    if not done.exists():
        if not CIFAR10_JPG.is_file():
            raise SystemExit(f"{who}: {CIFAR10_JPG} not found; it holds the real CIFAR-10 "
                             f"photos this benchmark reads")
        with tarfile.open(CIFAR10_JPG) as tar:
            tar.extractall(root, filter="data")
        done.touch()
    return root


def link_photos(photos: Iterable[Path], folder: Path) -> None:
    """Symbolic links to ``photos`` in ``folder`` (created), under their own names."""
    folder.mkdir(parents=True, exist_ok=True)
    for photo in photos:
        link = folder / photo.name
        if not link.exists():
            link.symlink_to(photo)
