# Quick start: `make run` (the main job) and `make test` (the whole suite).
# Both create .venv/ on first use. torchrec is installed with --no-deps: its declared
# dependency is the CUDA fbgemm-gpu, which would overwrite fbgemm-gpu-cpu and fail to load.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
# Real data samples (tests that need them skip when the folder is missing).
export TRANSACT_DATA_DIR ?= $(abspath ../shared/data)
PY := $(VENV)/bin/python

.PHONY: run quickstart test bench ablation install clean

$(VENV)/.installed: requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps torchrec==1.8.0
	$(PY) -m pip install -q --no-build-isolation -e .
	$(PY) -c "import torchrec, fbgemm_gpu, torchrec_transact"
	touch $@

install: $(VENV)/.installed

# The main job: TransAct-DCN on synthetic data next to the same model without the sequence.
run: install
	$(PY) -m torchrec_transact.train --compare-no-sequence --output-dir outputs/main

quickstart: install
	$(PY) examples/quickstart.py

test: install
	$(PY) -m pytest -q tests

# Every benchmark (10.5 min in the last run here): benchmarks/results.json and benchmarks/results.md.
bench: install
	$(PY) benchmarks/run_all.py

# The paper's offline comparison on synthetic data, MovieLens and Criteo (README tables and
# charts): outputs/ablation/<data>/ablation.{md,json,png}.
ablation: install
	$(PY) -m torchrec_transact.ablation --data all --output-dir outputs/ablation

clean:
	rm -rf $(VENV) build *.egg-info
