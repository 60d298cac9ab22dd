# Quick start: `make demo` runs the embedded study, `make test` runs the test suite.
# Both create .venv and install everything from this repository's own files.
# Tests come in two tiers (pytest markers, pyproject.toml): `make test` runs tier 1, the default selection
# (tiny models, shared trained detectors, one 2-process torchrun check per kind of pass); `make test2` runs
# tier 2 (marker `tier2`: full study runs, demo benchmark rebuilds and detector training, the benchmark suite,
# every command end to end); `make test-all` runs both, as CI does (.ci/run). `pytest -m slow` (full-size
# models, the demo as shipped) and `pytest -m gpu` (CUDA) are separate.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= demo_out

.PHONY: venv demo test test2 test-all lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps lxt==2.1
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tff demo --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test2: $(STAMP)
	$(BIN)/python -m pytest -q -m tier2

test-all: test test2

lint: $(STAMP)
	$(BIN)/ruff check src tests

bench: $(STAMP)
	$(BIN)/tff bench lrp --arch resnet50 --batch-size 8 --device auto

clean:
	rm -rf $(VENV) $(DEMO_OUT) build src/*.egg-info
