"""Your own augmentation pipeline (albumentations), applied per image on the host.

    >>> import albumentations as A
    >>> augment = gluonft.pipelines.Albumentations(A.Compose([
    ...     A.HorizontalFlip(), A.Affine(rotate=(-15, 15)),
    ...     A.RandomBrightnessContrast(), A.CoarseDropout()]))           # doctest: +SKIP
    >>> gluonft.fit(net, train, val, augment=augment, ...)             # doctest: +SKIP

`fit` takes it wherever it takes an `Augment`. Each training image (uint8, the stored square
size) goes through the pipeline on the host before the batch goes to the device, where it is
resized to the input size and normalised as in evaluation. Every image gets its own seed,
drawn from the same seeded (seed, epoch) stream as `Augment`'s draws, so a run repeats exactly,
whatever the number of worker processes. The pipeline must keep the image's size and uint8
dtype (a crop to the input size belongs on the device side: gluonft resizes); a transform that
breaks that is named in the error.

The ``albumentations`` extra installs albumentations 2 (gluonft.compat lifted the numpy < 1.24
that once held it at 1.3.1). Each image's seed goes to the pipeline's own generators
(``set_random_seed``, albumentations >= 1.4.19); a 1.x pipeline without them draws from
Python's ``random`` and numpy's global generator, seeded per image instead. Parallel work uses
processes (``workers``), each seeding per image, so the result does not depend on their number.
"""
from __future__ import annotations

import multiprocessing
import os
import random
import weakref
from concurrent.futures import ProcessPoolExecutor
from typing import List, Optional, Sequence

import numpy as np

__all__ = ["Albumentations", "load_pipeline", "PIPELINE_PIP"]

PIPELINE_PIP = "pip install -e '.[albumentations]' (in gluonft's source folder)"
_WORKER_PIPELINE = None   # the pipeline inside a worker process


def _albumentations():
    try:
        import albumentations
    except ImportError:
        raise ImportError(f"albumentations is not installed: {PIPELINE_PIP}") from None
    return albumentations


def _seed(pipeline, seed: int) -> None:
    """Seed what ``pipeline`` draws from: its own generators (albumentations 2), or Python's
    and numpy's global ones (albumentations 1.x draws from those)."""
    if hasattr(pipeline, "set_random_seed"):
        pipeline.set_random_seed(int(seed) % (2 ** 32))
    else:
        random.seed(int(seed))
        np.random.seed(int(seed) % (2 ** 32))


def _apply(pipeline, image: np.ndarray, seed: int) -> np.ndarray:
    _seed(pipeline, seed)
    return pipeline(image=image)["image"]


def _worker_init(pipeline) -> None:
    global _WORKER_PIPELINE
    _WORKER_PIPELINE = pipeline


def _worker_apply(chunk):
    images, seeds = chunk
    return [_apply(_WORKER_PIPELINE, image, seed) for image, seed in zip(images, seeds)]


class Albumentations:
    """An albumentations pipeline as a gluonft training augmentation.

    Args:
        pipeline: an ``A.Compose`` (or a single transform) taking ``image=`` uint8 HxWx3 RGB.
        workers: worker processes applying it (0: in this process). Default: 0 on a machine
            with 2 cores or fewer (there the device computation needs them), else
            ``min(4, cores - 1)``.
    """

    is_identity = False

    def __init__(self, pipeline, *, workers: Optional[int] = None):
        A = _albumentations()
        if not isinstance(pipeline, A.BasicTransform) and not hasattr(pipeline, "transforms"):
            raise ValueError(f"expected an albumentations transform or A.Compose, got "
                             f"{type(pipeline).__name__}")
        cores = os.cpu_count() or 1
        if workers is None:
            workers = 0 if cores <= 2 else min(4, cores - 1)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be an int >= 0, got {workers!r}")
        self.pipeline, self.workers = pipeline, workers
        self._pool: Optional[ProcessPoolExecutor] = None
        self._checked = False

    def to_dict(self) -> dict:
        """What ran, for History settings and cards: albumentations' own serialisation."""
        A = _albumentations()
        try:
            described = A.to_dict(self.pipeline)
        except Exception:  # a Lambda transform has no serialisation: its repr then
            described = repr(self.pipeline)
        return {"albumentations": described, "version": A.__version__}

    def __repr__(self) -> str:
        names = [type(t).__name__ for t in getattr(self.pipeline, "transforms", [self.pipeline])]
        return f"Albumentations({', '.join(names)})"

    def __call__(self, images: np.ndarray, seeds: Sequence[int]) -> np.ndarray:
        """The augmented copies of ``images`` (N, S, S, 3) uint8, image i seeded by seeds[i]."""
        if self.workers and len(images) > 1:
            out = self._parallel(images, seeds)
        else:
            out = [_apply(self.pipeline, image, seed) for image, seed in zip(images, seeds)]
        for i, result in enumerate(out):
            if not (isinstance(result, np.ndarray) and result.shape == images[i].shape
                    and result.dtype == np.uint8):
                raise ValueError(self._culprit(images[i], seeds[i], result))
        return np.stack(out)

    def _parallel(self, images, seeds) -> List[np.ndarray]:
        if self._pool is None:
            # Spawned, not forked: a fork copies MXNet's engine and OpenMP threads' locks
            # in whatever state they are in, and a child that meets one held blocks for ever.
            # The cost: each worker imports gluonft once, when the pool starts.
            self._pool = ProcessPoolExecutor(self.workers, initializer=_worker_init,
                                             initargs=(self.pipeline,),
                                             mp_context=multiprocessing.get_context("spawn"))
            weakref.finalize(self, self._pool.shutdown, wait=False)
        chunks = [(images[i::self.workers], seeds[i::self.workers])
                  for i in range(self.workers)]
        parts = list(self._pool.map(_worker_apply, chunks))
        out: List[Optional[np.ndarray]] = [None] * len(images)
        for i, part in enumerate(parts):
            out[i::self.workers] = part
        return out

    def _culprit(self, image: np.ndarray, seed: int, result) -> str:
        """Name the transform that changed the size or dtype (replayed with the same seed)."""
        what = (f"{result.shape} {result.dtype}" if isinstance(result, np.ndarray)
                else type(result).__name__)
        expected = f"{image.shape} uint8"
        _seed(self.pipeline, seed)
        if hasattr(self.pipeline, "transforms") and not hasattr(self.pipeline,
                                                                "set_random_seed"):
            random.random()  # what a 1.x A.Compose draws for its own p before its transforms
        current = image
        for transform in getattr(self.pipeline, "transforms", [self.pipeline]):
            current = transform(image=current)["image"]
            if not (isinstance(current, np.ndarray) and current.shape == image.shape
                    and current.dtype == np.uint8):
                got = (f"{current.shape} {current.dtype}" if isinstance(current, np.ndarray)
                       else type(current).__name__)
                return (f"the albumentations transform {transform!r} turned a {expected} image "
                        f"into {got}: the pipeline must keep the stored size and uint8 (gluonft "
                        f"resizes to the input size and normalises on the device); drop "
                        f"resizing/normalising transforms")
        return (f"the albumentations pipeline turned a {expected} image into {what}: it must "
                f"keep the stored size and uint8")


def load_pipeline(path: str, *, workers: Optional[int] = None) -> Albumentations:
    """An `Albumentations` from a pipeline file written by ``A.save(pipeline, path)`` (JSON,
    or YAML for a .yml/.yaml name)."""
    A = _albumentations()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"albumentations pipeline {path} does not exist; write one with "
                                f"A.save(A.Compose([...]), {path!r})")
    fmt = "yaml" if path.lower().endswith((".yml", ".yaml")) else "json"
    try:
        pipeline = A.load(path, data_format=fmt)
    except Exception as error:
        raise ValueError(f"{path} is not an albumentations pipeline file "
                         f"({type(error).__name__}: {error})") from None
    return Albumentations(pipeline, workers=workers)
