# router_ml: `make train` is the main job, `make test` runs the tests.
# Everything is installed into .venv from requirements.lock (pinned); a second run reuses it.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export MPLBACKEND := Agg
# litellm fetches its model cost map from the network at import unless told not to
export LITELLM_LOCAL_MODEL_COST_MAP := True
export NO_MKDOCS_2_WARNING := 1

.PHONY: install test test-fast docs data train bench-quality bench-learning-curve bench-textbook bench-peers bench-speed bench-install \
	bench-serve bench-faults bench-spark bench-conversation bench-tasks notebook-plot clean

$(STAMP): requirements.lock pyproject.toml
	@# Spark (router-ml score --spark and its tests) needs a Java runtime; the Redis quota
	@# store's tests need redis-server
	{ command -v java && command -v redis-server; } >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		default-jre-headless redis-server >/dev/null; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP) docs
	$(PY) -m pytest -q -p no:cacheprovider

# The documentation site (mkdocs.yml) into site/, warnings as errors: a broken link, a page
# missing from the navigation or an API name that no longer exists fails the build.
docs: $(STAMP)
	$(PY) -m mkdocs build --strict --quiet

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# Where the data sources are, in router_ml.learn.sources.resolve_data_dir's order: $ROUTER_ML_DATA,
# else ./data if it holds a source, else ../shared/data, else ./data (fetched there with
# router-ml data fetch).
DATA ?= $(or $(ROUTER_ML_DATA),$(if $(wildcard data/routellm-evals),data,$(if $(wildcard ../shared/data/routellm-evals),../shared/data,data)))

data: $(STAMP)
	$(PY) -m router_ml.cli data fetch --check --dest $(DATA) >/dev/null || \
		$(PY) -m router_ml.cli data fetch --dest $(DATA)

train: $(STAMP) data
	ROUTER_ML_DATA=$(DATA) $(PY) training/train.py --protocol mmlu --out models/mmlu
	ROUTER_ML_DATA=$(DATA) $(PY) training/train.py --out models/default

bench-quality: $(STAMP)
	$(PY) benchmarks/bench_quality.py

bench-learning-curve: $(STAMP)
	$(PY) benchmarks/bench_learning_curve.py

bench-textbook: $(STAMP)
	$(PY) benchmarks/bench_textbook.py

bench-peers: $(STAMP)
	$(PY) benchmarks/bench_peers.py

bench-speed: $(STAMP)
	$(PY) benchmarks/bench_speed.py

bench-install:
	$(PYTHON) benchmarks/bench_install.py

bench-serve: $(STAMP)
	$(PY) benchmarks/bench_serve.py

bench-faults: $(STAMP)
	$(PY) benchmarks/bench_faults.py

bench-spark: $(STAMP)
	$(PY) benchmarks/bench_spark.py

# chats scored on their user turns: the readings compared on arena-battles-2023
bench-conversation: $(STAMP)
	$(PY) benchmarks/bench_conversation.py

bench-tasks: $(STAMP)
	$(PY) benchmarks/bench_tasks.py

notebook-plot: $(STAMP)
	ROUTER_ML_NB_PLOT=docs/threshold_curve.png $(VENV)/bin/jupyter execute notebooks/threshold_tuning.ipynb

clean:
	rm -rf $(VENV) .pytest_cache reports mlruns site
