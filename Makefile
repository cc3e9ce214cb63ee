# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-reference lint venv clean gpu-wheels

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build of PyTorch, pinned; see README for CUDA.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[ray,test]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/autolfads demo

test: $(STAMP)
	$(PY) -m pytest

# The same suite on the reference PyTorch operations only (tests of the C++ operations skip).
test-reference: $(STAMP)
	AUTOLFADS_ACCEL=none $(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

# What bench/gpu_check.py needs on a GPU machine without a package index (README, "GPU"):
# OmegaConf's wheel (its antlr4 runtime is vendored from 2.4 on; PyYAML is there) in .whl/.
gpu-wheels:
	$(shell test -x $(PY) && echo $(PY) || echo $(PYTHON)) -m pip download -q --no-deps \
		--only-binary=:all: -d .whl "omegaconf==2.4.0"

clean:
	rm -rf $(VENV) build *.egg-info
