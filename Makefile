# insarlake: `make run` runs the pipeline on the demo scene, `make test` runs the tests.
# Both set up what they need on first use (virtualenv, pinned packages, JVM jars).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup run test test-fast test-long bench bench-scale catalog-server catalog-server-stop dist clean

setup: $(STAMP)
	@$(PY) -m insarlake.jars fetch --jars-dir .jars

# Reinstall only when the pins or the package metadata change.
$(STAMP): requirements.txt setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

run: setup
	./spark-submit.sh jobs/pipeline.py --config conf/local.yaml

# The lake's catalog for several processes at once (catalog.kind=server: jobs and notebooks use
# ./lake together; a job also starts it when it is not running). LAKE=path for another lake.
LAKE ?= ./lake
catalog-server: setup
	$(PY) -m insarlake.catalog start --config conf/local.yaml --lake $(LAKE) --set catalog.kind=server

catalog-server-stop: setup
	$(PY) -m insarlake.catalog stop --config conf/local.yaml --lake $(LAKE) --set catalog.kind=server

# Tiers (pytest.ini): test is what CI runs, every test but the long ones (~47 min on 2 cores with
# the setup: watch it against CI's 90; the 25 slowest tests are listed at the end);
# test-fast the pure tests only (no JVM, ~1 min), for quick feedback; test-long the whole pipelines
# as processes of their own (standalone cluster, Spark Connect, S3 bucket, spark-submit, two tracks),
# the ingest job per damage, the crash trials of every job and the concurrent pipelines (~90 min),
# before a release and after changing lake.py, modelstore.py, catalog.py, a job's writes or how
# the jobs are submitted.
test: setup
	$(PY) -m pytest -q -m "not long" --durations=25 tests

test-fast: setup
	$(PY) -m pytest -q -m "not spark and not slow" tests

test-long: setup
	$(PY) -m pytest -q -m long tests

# Benchmarks against peers (outside the test suite); results in benchmarks/README.md.
bench: setup
	$(PY) benchmarks/softdtw_assign.py
	$(PY) benchmarks/softdtw_assign.py --egms
	$(PY) benchmarks/dbscan.py
	$(PY) benchmarks/dbscan.py --n 50000
	$(PY) benchmarks/dbscan_metro.py
	$(PY) benchmarks/classify_inference.py
	$(PY) benchmarks/classify_inference.py --sizes seed --n 10000
	$(PY) benchmarks/hotspot_seeds.py --seeds 7 1 2 --set "classify.models=[lstm]"
	$(PY) benchmarks/hotspot_scenes.py --set temporal.sample_size=60 --set temporal.silhouette_size=60
	./spark-submit.sh jobs/forecast.py --config conf/local.yaml --dataset demo --evaluate
	$(PY) benchmarks/forecast_scaling.py --lake lake --dataset demo --sizes 250 500 1000 2000
	$(PY) benchmarks/forecast_noise_floor.py
	$(PY) benchmarks/tskm_fit.py

# The whole pipeline at 100k, 300k and 1M pixels (first run and re-run), per-stage time and memory,
# cost model, one core against two (pinned); hours on 2 cores. Results in benchmarks/README.md.
# The driver's memory apart from the executors': benchmarks/scale.py --sizes 100000 1000000 --standalone.
bench-scale: setup
	$(PY) benchmarks/scale.py --sizes 100000 300000 1000000 --compare-cores 300000 --pin --out benchmarks/out

# What a cluster needs (README "Running on a cluster"): the insarlake wheel (its console scripts
# insarlake-<job> are the Databricks wheel-task entry points) and a packed Python environment with
# every pinned package and the wheel, for spark-submit --archives (INSARLAKE_ENV=...). The
# environment holds torch and is large (several GB); its python must match the nodes' (3.11).
dist: setup
	rm -f dist/insarlake-*.whl
	$(PY) -m pip wheel -q --no-deps -w dist .
	rm -rf dist/env
	$(PYTHON) -m venv dist/env
	dist/env/bin/pip install -q -r requirements.txt dist/insarlake-*.whl
	$(PY) -m venv_pack -p dist/env -o dist/insarlake-env.tar.gz -f
	rm -rf dist/env
	@ls -lh dist/insarlake-*.whl dist/insarlake-env.tar.gz

clean:
	rm -rf lake dist .derby spark-warehouse
