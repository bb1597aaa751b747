# phenogen set-up, demo and tests. `make demo` and `make test` do all the set-up themselves.
#
#   make demo                  simulate → train DNA model → train image model → generate → evaluate → report
#   make test                  the default test suite (offline, serial, a few minutes on 2 CPU cores)
#   make test-slow             also the slow tests
#   make test-fuzz             the long fuzz runs (>= 10,000 mutated inputs per reader)
#   make bench                 the benchmarks in bench/ (results: BENCHMARKS.md)
#
# torch: TORCH_SPEC is installed before the package. The default is the CPU build 2.13.0, which pip
# finds locally on the project's machines. On a CUDA machine: `make setup TORCH_SPEC=torch` (PyPI's
# Linux torch wheels are CUDA builds), or install your torch first and pass TORCH_SPEC=skip.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= runs/demo
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export PYTHONDONTWRITEBYTECODE := 1
export OMP_WAIT_POLICY := PASSIVE

.PHONY: setup system-tools demo test test-slow test-fuzz bench lint clean

setup: system-tools $(VENV)/.installed

# MAFFT, FastTree and IQ-TREE (Debian packages) for `phenogen ancestors`, and chromium + chromium-driver
# for the web app's browser test; installed when missing and we are root with apt-get (the project's
# machines and CI), otherwise a note.
system-tools:
	@missing=""; command -v mafft >/dev/null || missing="$$missing mafft"; \
	command -v fasttree >/dev/null || command -v FastTree >/dev/null || missing="$$missing fasttree"; \
	command -v iqtree2 >/dev/null || command -v iqtree >/dev/null || missing="$$missing iqtree"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "note: install the Debian packages$$missing (phenogen ancestors; the app's browser test); tests needing them are skipped"; fi; \
	fi

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	if [ "$(TORCH_SPEC)" != "skip" ]; then $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"; fi
	$(BIN)/python -m pip install --quiet -e '.[app,dev]'
	$(BIN)/python -c "import torch, phenogen; print('phenogen', phenogen.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
	touch $@

demo: setup
	$(BIN)/phenogen demo --out $(DEMO_OUT)

test: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -p no:cacheprovider -q

test-slow: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -p no:cacheprovider -q -m "slow or not slow and not gpu"

test-fuzz: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -p no:cacheprovider -q -m fuzz

bench: setup
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache
