# Two commands on a fresh machine: `make bench` and `make test` (Python 3.11, 3.12 or 3.13).
# Each creates the virtual environment $(VENV) with every dependency first, installed by uv
# (a pip replacement, itself installed from PyPI into the venv, that resolves in seconds), then
# MXNet without its dependencies: its wheel's numpy<2 is false once gluonft.compat has run, and
# would hold scipy, pandas... at numpy 1.x or fail on 3.13 (pyproject.toml says more).
#   make test PYTHON=python3.13 VENV=.venv-3.13    # another interpreter, another folder
#   make install VENV=.venv-np1 NUMPY='<2'          # a numpy range (default: the newest)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of MXNet unless an NVIDIA driver is present (then the CUDA build and the gpu
# extra's CUDA libraries).
GPU    := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo yes)
MXNET  ?= $(if $(GPU),mxnet-cu112,mxnet)==1.9.1
COMMA  := ,
EXTRAS ?= test$(if $(GPU),$(COMMA)gpu)
NUMPY  ?=
ARGS ?=
# PyTorch beside gluonft, for `python -m bench.speed --peer torch` (2.13.0: the CPU build on
# this project's machines' disk for Python 3.11; elsewhere pip downloads its own).
TORCH ?= torch==2.13.0

# What CI also runs on Python 3.12 and 3.13 (and numpy 1.23): import and compat, a head-only fit
# on real photos with an accuracy floor, EfficientNet's logits against PyTorch's, save/load,
# symbol and ONNX export, the service, albumentations 2.
PORTABLE_TESTS := tests/test_compat.py tests/test_threads.py \
  tests/test_train.py::test_head_only_on_imagenet_features_learns_real_cifar_far_above_chance \
  tests/test_efficientnet.py::test_logits_equal_the_pytorch_reference_on_real_photos \
  tests/test_efficientnet.py::test_export_to_symbol_and_onnx_gives_the_same_logits \
  tests/test_model_io.py tests/test_serve.py tests/test_mixing.py

.PHONY: install bench lint test test-portable clean torch same-python

# A venv made by another interpreter is not silently reused: say so instead.
same-python:
	@if [ -x $(BIN)/python ] && [ "$$($(BIN)/python -c 'import sys; print(sys.version_info[:2])')" \
	     != "$$($(PYTHON) -c 'import sys; print(sys.version_info[:2])')" ]; then \
	  echo "$(VENV) holds $$($(BIN)/python -V), not $$($(PYTHON) -V): make clean, or VENV=another-folder"; \
	  exit 2; fi

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "gluonft needs Python 3.11, 3.12 or 3.13; this is " + sys.version.split()[0] + ": make ... PYTHON=python3.12")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	echo 'numpy$(NUMPY)' > $(VENV)/numpy-range.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --constraint $(VENV)/numpy-range.txt \
	  -e ".[$(EXTRAS)]"
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps "$(MXNET)"
	touch $@

install: same-python $(BIN)/.installed

bench: install
	$(BIN)/python -m bench.cifar $(ARGS)

# ruff as pyproject.toml configures it (pyflakes, pycodestyle, import order), before the tests
lint: install
	$(BIN)/ruff check gluonft bench tests tools startup

test: install lint
	$(BIN)/python -m pytest -q $(ARGS)

test-portable: install
	$(BIN)/python -m pytest -q $(PORTABLE_TESTS) $(ARGS)

torch: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH)

clean:
	rm -rf $(VENV) *.egg-info
