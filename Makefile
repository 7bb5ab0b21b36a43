# tagifai: every target runs inside .venv, which `make install` builds from a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# One tracking store for the CLI, `mlflow run`, the UI and the model server: MLflow's own
# default (./mlflow.db here), so they agree with no variable set; yours (a server) wins.
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
# The workload: text (tag project descriptions) or images (classify grey images).
TASK ?= text
ifeq ($(TASK),images)
STUDY ?= tagifai-images
MODEL_NAME := tagifai-images
else
STUDY ?= tagifai
MODEL_NAME := tagifai
endif
HOST ?= 127.0.0.1
UI_PORT ?= 5000
SERVE_PORT ?= 5001
DASHBOARD_PORT ?= 8080
MODEL_URI ?= models:/$(MODEL_NAME)@champion
# The Optuna storage train-best, report and dashboard read (a PostgreSQL URL for a parallel
# study: optimize's summary names it).
STORAGE ?= sqlite:///$(CURDIR)/experiments/optuna.db
# The 3.17 UI opens in its GenAI view unless the URL asks for the model-training one.
UI_VIEW := ?workflowType=machine_learning

# Local servers for parallel optimize (scripts/servers.sh): PostgreSQL and an MLflow server.
PG_PORT ?= 5433
MLFLOW_PORT ?= 5002
export PG_PORT MLFLOW_PORT
PG_URL := postgresql://postgres@127.0.0.1:$(PG_PORT)/optuna
# PostgreSQL's generated password, read by clients from this owner-only file (scripts/servers.sh).
export PGPASSFILE ?= $(CURDIR)/.servers/pgpass
WORKERS ?= 2

.PHONY: help install system-deps test test-fast lint format train optimize optimize-parallel train-best predict ui dashboard report serve bench bench-smoke clean servers-start servers-stop

help: ## List the targets and the variables they take
	@grep -hE '^[a-zA-Z_.-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'
	@echo "Variables (make <target> NAME=value):"
	@echo "  TASK=$(TASK)  the workload: text or images"
	@echo "  STUDY=$(STUDY)  the study (and MLflow experiment) optimize/report/dashboard use"
	@echo "  TEXT=\"...\" / IMAGE=path.png  what make predict predicts (TASK=images: IMAGE)"
	@echo "  MODEL_URI=$(MODEL_URI)  what predict and serve load"
	@echo "  STORAGE=$(STORAGE)  Optuna storage for train-best, report and dashboard"
	@echo "  MLFLOW_TRACKING_URI=$(MLFLOW_TRACKING_URI)"
	@echo "  HOST=$(HOST) UI_PORT=$(UI_PORT) SERVE_PORT=$(SERVE_PORT) DASHBOARD_PORT=$(DASHBOARD_PORT)"
	@echo "  WORKERS=$(WORKERS) PG_PORT=$(PG_PORT) MLFLOW_PORT=$(MLFLOW_PORT)  (optimize-parallel)"

install: $(VENV)/.installed ## Build .venv (CPU torch pinned by constraints.txt) and install tagifai

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

system-deps: ## Install PostgreSQL 15 and curl with apt if missing (as root; else a note)
	scripts/system-deps.sh

test: install system-deps ## Run all tests, training and server tests included
	$(PY) -m pytest

test-fast: install ## Run the tests that train no model
	$(PY) -m pytest -m "not training and not server and not slow"

lint: install ## ruff check, ruff format --check and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install ## Format and autofix with ruff
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

train: install ## Train one model on the sample data (one MLflow run); TASK=images for images
	tagifai train --task $(TASK)

optimize: install ## Run the Optuna study through `mlflow run` on the sample data; TASK=images for digits
	mlflow run . -e optimize --env-manager local -P task=$(TASK) -P study_name=$(STUDY)

servers-start: install system-deps ## Start PostgreSQL (127.0.0.1:5433) and an MLflow server on it (127.0.0.1:5002)
	scripts/servers.sh pg-start
	scripts/servers.sh mlflow-start

servers-stop: ## Stop the MLflow server and PostgreSQL
	scripts/servers.sh mlflow-stop
	scripts/servers.sh pg-stop

optimize-parallel: servers-start ## WORKERS (2) workers on one study, PostgreSQL + MLflow server
	MLFLOW_TRACKING_URI=http://127.0.0.1:$(MLFLOW_PORT) \
		tagifai optimize --task $(TASK) --storage $(PG_URL) --study-name $(STUDY)-parallel \
		--workers $(WORKERS)

train-best: install ## Train, log and register STUDY's best model (TASK=images: tagifai-images)
	tagifai train-best --task $(TASK) --study $(STUDY) --storage "$(STORAGE)"

predict: install ## Predict with the champion: make predict TEXT="..." (or TASK=images IMAGE=x.png)
	@input="$(if $(filter images,$(TASK)),$(IMAGE),$(TEXT))"; \
	if [ -z "$$input" ]; then \
		echo 'make predict: say what to predict: make predict TEXT="a transformer for text" (or TASK=images IMAGE=digit.png)' >&2; \
		exit 2; \
	fi; \
	tagifai predict --task $(TASK) "$$input"

digit.png: | $(VENV)/.installed ## A sample image for make predict TASK=images: a 3 of scikit-learn's 8x8 digits
	$(PY) -c 'from PIL import Image; from sklearn.datasets import load_digits; \
		Image.fromarray((load_digits().images[3] * 255 / 16).round().astype("uint8")).save("$@")'

ui: install ## MLflow UI on http://127.0.0.1:5000 (runs, plots, registered models); prints STUDY's trials view
	@echo "MLflow UI: http://$(HOST):$(UI_PORT)/#/experiments$(UI_VIEW)"
	@$(PY) -m tagifai.study_runs link $(STUDY) http://$(HOST):$(UI_PORT)
	mlflow ui --backend-store-uri "$(MLFLOW_TRACKING_URI)" --host $(HOST) --port $(UI_PORT)

dashboard: install ## optuna-dashboard on http://127.0.0.1:8080 for the studies in STORAGE (live)
	@case "$(STORAGE)" in sqlite:///*) db="$(STORAGE)"; db="$${db#sqlite:///}"; \
		[ -f "$$db" ] || { echo "make dashboard: no study storage at $$db yet: run make optimize first" >&2; exit 2; };; esac
	optuna-dashboard "$(STORAGE)" --host $(HOST) --port $(DASHBOARD_PORT)

report: install ## One self-contained HTML page about STUDY: reports/<study>.html
	tagifai report --study $(STUDY) --storage "$(STORAGE)" --output reports/$(STUDY).html

serve: install ## Serve the champion model on http://127.0.0.1:5001/invocations (tagifai serve)
	tagifai serve --model-uri "$(MODEL_URI)" --host $(HOST) --port $(SERVE_PORT)

bench: install ## Benchmarks on the real data (../shared; text ~20 min + images ~45 min on 2 cores); writes benchmarks/RESULTS.md
	$(PY) -m benchmarks.run_all

bench-smoke: install ## Every benchmark on the samples, tiny settings (checks the scripts; ~10 min)
	$(PY) -m benchmarks.run_all --smoke

clean: ## Remove run outputs (tracking store, studies, caches); keeps .venv
	rm -rf mlflow.db experiments/mlflow.db experiments/optuna.db experiments/artifacts mlruns data \
		config/best_params.json config/best_params-images.json .servers reports test-artifacts \
		digit.png
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
