# Quick start: `make demo` runs the embedded study, `make test` runs the test suite.
# Both create .venv and install everything from this repository's own files.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= demo_out

.PHONY: venv demo test lint bench clean

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

lint: $(STAMP)
	$(BIN)/ruff check src tests

bench: $(STAMP)
	$(BIN)/tff bench lrp --arch resnet50 --batch-size 8 --device auto

clean:
	rm -rf $(VENV) $(DEMO_OUT) build src/*.egg-info
