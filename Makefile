# router_ml: `make train` is the main job, `make test` runs the tests.
# Everything is installed into .venv from requirements.lock (pinned); a second run reuses it.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export MPLBACKEND := Agg

.PHONY: install test test-fast train bench-quality bench-peers bench-speed notebook-plot clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

train: $(STAMP)
	$(PY) training/train.py --protocol mmlu --out models/mmlu
	$(PY) training/train.py --out models/default

bench-quality: $(STAMP)
	$(PY) benchmarks/bench_quality.py

bench-peers: $(STAMP)
	$(PY) benchmarks/bench_peers.py

bench-speed: $(STAMP)
	$(PY) benchmarks/bench_speed.py

notebook-plot: $(STAMP)
	ROUTER_ML_NB_PLOT=docs/threshold_curve.png $(VENV)/bin/jupyter execute notebooks/threshold_tuning.ipynb

clean:
	rm -rf $(VENV) .pytest_cache reports mlruns
