# csf-responder: the front door. `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEFAULT_COHORT := data/raw/phase2
COHORT ?=
CONFIG ?= configs/train.yaml
SET ?=
HOST ?= 127.0.0.1
PORT ?= 5000

# No usage telemetry leaves the machine from runs over clinical data.
export MLFLOW_DISABLE_TELEMETRY ?= true
export DO_NOT_TRACK ?= true

.PHONY: help venv data validate train effect score promote test lint ui server bench clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-8s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: COHORT=dir CONFIG=file SET='--set key.path=value ...' (make train)"
	@echo "             COHORT=dir MODEL=uri OUT=dir FORCE=1 PLOTS=n (make score)"
	@echo "             HOST= PORT= SERVER_STORE=uri SERVER_ARTIFACTS=dir|uri SERVER_WORKERS=n (make server)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv and install the package (other targets do it when needed)

data: $(STAMP) ## (Re)generate the default simulated cohort in data/raw/phase2
	$(BIN)/csf-responder simulate --out $(DEFAULT_COHORT)

validate: $(STAMP) ## Check a cohort without training; write data/interim/<cohort>/ (COHORT=dir)
ifeq ($(strip $(COHORT)),)
	@test -f $(DEFAULT_COHORT)/patients.csv || $(MAKE) --no-print-directory data
	$(BIN)/csf-responder validate --config $(CONFIG) $(SET)
else
	$(BIN)/csf-responder validate --cohort $(COHORT) --config $(CONFIG) $(SET)
endif

train: $(STAMP) ## Train and log the responder models (COHORT=dir CONFIG=file SET=...)
ifeq ($(strip $(COHORT)),)
	@test -f $(DEFAULT_COHORT)/patients.csv || $(MAKE) --no-print-directory data
	$(BIN)/csf-responder train --config $(CONFIG) $(SET)
else
	$(BIN)/csf-responder train --cohort $(COHORT) --config $(CONFIG) $(SET)
endif

effect: $(STAMP) ## Who benefits: individual benefit, predictive features, enrichment (COHORT=dir SET=...)
ifeq ($(strip $(COHORT)),)
	@test -f $(DEFAULT_COHORT)/patients.csv || $(MAKE) --no-print-directory data
	$(BIN)/csf-responder effect --config configs/effect.yaml $(SET)
else
	$(BIN)/csf-responder effect --cohort $(COHORT) --config configs/effect.yaml $(SET)
endif

score: $(STAMP) ## Score a new cohort (COHORT=dir [MODEL=uri] [OUT=dir] [FORCE=1] [PLOTS=n])
	@$(if $(strip $(COHORT)),true,\
		echo 'usage: make score COHORT=dir [MODEL=models:/csf-responder@champion] [OUT=dir]' >&2; exit 2)
	$(BIN)/csf-responder score --cohort '$(COHORT)' $(if $(strip $(MODEL)),--model '$(MODEL)') \
		$(if $(strip $(OUT)),--out '$(OUT)') $(if $(strip $(FORCE)),--force) \
		$(if $(strip $(PLOTS)),--explain-plots $(PLOTS)) $(SET)

promote: $(STAMP) ## Move the registry alias to a version by hand (VERSION=n REASON="why")
	@$(if $(and $(strip $(VERSION)),$(strip $(REASON))),true,\
		echo 'usage: make promote VERSION=n REASON="why" [CONFIG=file SET=...]' >&2; exit 2)
	$(BIN)/csf-responder promote --version $(VERSION) \
		--reason '$(subst ','\'',$(REASON))' --config $(CONFIG) $(SET)

test: $(STAMP) ## Lint (ruff) and run the tests (pytest)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP) ## Lint only
	$(BIN)/ruff check .

ui: $(STAMP) ## Open the MLflow UI over the local store (http://127.0.0.1:5000; HOST, PORT)
	@mkdir -p mlruns/artifacts
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db \
		--default-artifact-root mlruns/artifacts --host $(HOST) --port $(PORT)

# make server: the MLflow tracking server (docs/tracking-server.md). Its store is SQL
# (SQLite by default; SERVER_STORE=postgresql://user@host/db for PostgreSQL, driver
# psycopg2 in .venv) and it serves the artifacts itself (clients upload and download
# through it). It listens on HOST (127.0.0.1) and on PORT when given, else 5001, so
# that it can run beside make ui (5000). Clients: MLFLOW_TRACKING_URI=http://HOST:port.
SERVER_STORE ?= sqlite:///mlruns/server/mlflow.db
SERVER_ARTIFACTS ?= mlruns/server/artifacts
SERVER_WORKERS ?= 2
SERVER_PORT = $(if $(filter file,$(origin PORT)),5001,$(PORT))

server: $(STAMP) ## MLflow tracking server, SQL store + served artifacts (http://127.0.0.1:5001; HOST, PORT)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} \
	$(BIN)/mlflow server --backend-store-uri '$(SERVER_STORE)' \
		--artifacts-destination '$(if $(findstring :/,$(SERVER_ARTIFACTS)),$(SERVER_ARTIFACTS),$(abspath $(SERVER_ARTIFACTS)))' \
		--serve-artifacts --host $(HOST) --port $(SERVER_PORT) --workers $(SERVER_WORKERS)

# make cluster: a dask.distributed scheduler and CLUSTER_WORKERS single-threaded worker
# processes on 127.0.0.1, in the foreground (Ctrl-C stops them), for execution.backend:
# dask. Point a run at it: SET='--set execution.backend=dask
# --set execution.address=tcp://127.0.0.1:8786' (CLUSTER_PORT if changed).
CLUSTER_PORT ?= 8786
CLUSTER_WORKERS ?= 2
.PHONY: cluster
cluster: $(STAMP) ## Local dask scheduler + 2 workers for execution.backend=dask (tcp://127.0.0.1:8786; CLUSTER_PORT)
	@echo "dask scheduler at tcp://127.0.0.1:$(CLUSTER_PORT), $(CLUSTER_WORKERS) workers; in another shell:"
	@echo "  make train SET='--set execution.backend=dask --set execution.address=tcp://127.0.0.1:$(CLUSTER_PORT)'"
	@$(BIN)/dask scheduler --host 127.0.0.1 --port $(CLUSTER_PORT) --dashboard-address 127.0.0.1:0 & scheduler=$$!; \
	trap 'kill $$scheduler 2>/dev/null; wait $$scheduler' EXIT; \
	$(BIN)/dask worker tcp://127.0.0.1:$(CLUSTER_PORT) --host 127.0.0.1 --nworkers $(CLUSTER_WORKERS) \
		--nthreads 1 --dashboard-address 127.0.0.1:0

bench: $(STAMP) ## Speed and memory figures into benchmarks/*.json (train, --help, ingest, scoring, effect)
	$(BIN)/python benchmarks/bench.py --out benchmarks/results.json
	$(BIN)/python benchmarks/ingest_bench.py --out benchmarks/ingest_results.json
	$(BIN)/python benchmarks/score_bench.py --out benchmarks/score_results.json
	$(BIN)/python benchmarks/effect_bench.py --out benchmarks/effect_results.json
	$(BIN)/python benchmarks/parallel_bench.py --out benchmarks/parallel_results.json

clean: ## Remove generated data, runs and caches (keeps .venv)
	rm -rf data mlruns/mlflow.db mlruns/mlflow.db-wal mlruns/mlflow.db-shm mlruns/mlflow.db.lock \
		mlruns/artifacts reports .pytest_cache .ruff_cache
