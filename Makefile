# Two commands on a fresh machine (Python 3.11): `make bench` and `make test`.
# Each creates the virtual environment .venv with every pinned dependency first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of MXNet unless an NVIDIA driver is present.
MXNET_EXTRA := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
ARGS ?=

.PHONY: install bench test clean peer-venv

$(BIN)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[$(MXNET_EXTRA),test]"
	touch $@

install: $(BIN)/.installed

bench: install
	$(BIN)/python -m bench.cifar $(ARGS)

test: install
	$(BIN)/python -m pytest -q $(ARGS)

# PyTorch for `python -m bench.speed --peer torch` only, in a venv of its own: GluonCV refuses
# to import next to torch >= 2. torch 2.13.0 is the CPU build pip finds on this machine's disk.
peer-venv:
	$(PYTHON) -m venv .venv-peer
	.venv-peer/bin/pip install --quiet torch==2.13.0 'numpy<1.24'

clean:
	rm -rf $(VENV) .venv-peer *.egg-info
