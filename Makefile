# The README's first two commands: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Which torch build to install. A host with an NVIDIA driver gets PyPI's CUDA build; any other
# host gets the CPU build (a bare `torch` would drag in gigabytes of CUDA wheels it cannot use).
# Override either variable, e.g. `make serve TORCH_SPEC=torch==2.13.0 TORCH_INDEX=`.
TORCH_VERSION ?= 2.13.0
HAS_NVIDIA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
ifeq ($(HAS_NVIDIA),yes)
TORCH_SPEC ?= torch==$(TORCH_VERSION)
TORCH_INDEX ?=
else
TORCH_SPEC ?= torch==$(TORCH_VERSION)+cpu
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
endif

HOST ?= 127.0.0.1
PORT ?= 8000
MODELS ?= tiny
PYTEST_ARGS ?=

.PHONY: serve test install js-deps clean

serve: $(STAMP)
	$(BIN)/openreel up --models $(MODELS) --host $(HOST) --port $(PORT)

test: $(STAMP) js-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The configured package sources first (a local wheelhouse may carry the build); the
	# PyTorch index only when they lack it, as that index is slow to ask for every dependency.
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" 2>/dev/null || \
	  $(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	# The versions the suite and the Docker image were pinned at (scripts/gen_constraints.py).
	$(BIN)/python -m pip install --quiet --constraint requirements/constraints.txt -e ".[test]"
	touch $@

# The official JS client (@fal-ai/client), pinned by tests/js/package-lock.json.
js-deps: tests/js/node_modules/.installed

tests/js/node_modules/.installed: tests/js/package.json tests/js/package-lock.json
	npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(VENV) tests/js/node_modules data
