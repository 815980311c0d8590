# lkdn: `make demo` runs the main job on built-in data, `make test` runs the test suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test demo bench lint clean gpu-check gpu-wheels

install: $(STAMP)

# Idempotent: re-runs only when the requirement files change. torch goes first because
# basicsr 1.4.2's setup imports it (built with --no-build-isolation against this torch).
$(STAMP): requirements.txt setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q "torch>=2.10" "torchvision>=0.17"
	$(PY) -m pip install -q --no-build-isolation -r requirements.txt
	$(PY) -m pip uninstall -q -y lkdn 2>/dev/null || true  # the distribution's old name (now lkdn-sr)
	$(PY) -m pip install -q --no-build-isolation -e ".[dev,onnx,profile,spandrel,openvino,ncnn]"
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

demo: install
	$(VENV)/bin/lkdn-demo

bench: install
	$(PY) benchmarks/run.py

# On a machine with NVIDIA GPUs and its own torch (docs/gpu_check.md): the CUDA claims (tests/gpu) and the
# timings in under 8 minutes, reported in $(OUT). The other imports come from the wheels of `make gpu-wheels`
# (.whl/), installed aside. ARGS="--dry-run" tests the check on the CPU.
OUT ?= results/gpu_check
gpu-check:
	test ! -d .whl || $(PYTHON) -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/lkdn-site .whl/*.whl
	PYTHONPATH=/tmp/lkdn-site:. $(PYTHON) benchmarks/gpu_check.py --out $(OUT) $(ARGS)

# The wheels a GPU machine without network needs beside its own torch (into .whl/, git-ignored).
gpu-wheels: install
	$(PY) scripts/make_gpu_wheels.py --dest .whl

lint: install
	$(VENV)/bin/ruff check lkdn scripts tests benchmarks

clean:
	rm -rf $(VENV) results/demo .pytest_cache
