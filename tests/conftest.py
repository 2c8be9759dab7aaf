"""Shared test fixtures. Real data lives in ../shared (next to the project root), not the repo."""
from pathlib import Path

import pytest

import gluonft  # noqa: F401  (first: it sets OMP_NUM_THREADS before MXNet loads)

SHARED = (Path(__file__).resolve().parents[1] / ".." / "shared").resolve()


@pytest.fixture(scope="session")
def shared() -> Path:
    """The ../shared folder of real CIFAR-10 data and weights; skips the test when absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared not found: real CIFAR-10/weights live there, see README")
    return SHARED
