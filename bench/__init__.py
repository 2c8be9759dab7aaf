"""Benchmarks and the CIFAR-10 grid over gluonft."""
# gluonft first: it sets OMP_NUM_THREADS before MXNet loads (gluonft.threads).
import gluonft  # noqa: F401
