# sentiment-sweep: `make help` lists the targets. Every target bootstraps .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXP ?=
ARGS ?=
PORT ?= 5000
SERVE_PORT ?= 5001
# Stores, model name and the rest come from the Hydra config (conf/, EXP, ARGS) in every target.
STORAGE ?=
DASHBOARD_PORT ?= 8080
SERVER_HOST ?= 127.0.0.1
SERVER_NAMES ?=
SERVER_PORT ?= 5005
SERVER_DB ?= postgresql://postgres@127.0.0.1:5432/sentiment_mlflow
# The browser test drives Debian's Chromium; installed once, as root or through sudo.
CHROMEDRIVER := /usr/bin/chromedriver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
WORKERS ?= 1
# Test processes: files are spread over them (tests/conftest.py groups them: a file's fixtures stay in one process).
TEST_WORKERS ?= 2
# STORAGE=... is short for ARGS="sweep.storage=..."; several local workers share a journal file
# unless STORAGE names a database (postgresql://...).
SHARED_STORAGE = $(or $(STORAGE),journal:optuna.journal)
EXP_FLAG := $(if $(EXP),--experiment $(EXP),) $(if $(ENGINE),sweep.engine=$(ENGINE),)
WORKER_FLAGS := $(if $(filter-out 1,$(WORKERS)),--workers $(WORKERS) sweep.storage=$(SHARED_STORAGE),$(if $(STORAGE),sweep.storage=$(STORAGE),))
PROMOTE_FLAGS := $(if $(VERSION),--version $(VERSION),) $(if $(filter 1 yes true,$(FORCE)),--force,)
# A review reaches the CLI unchanged: make would expand `$5` in TEXT, so the recipe reads the raw
# value ($(value ...)) from the environment, where quotes and backslashes survive as well.
export REVIEW_TEXT := $(value TEXT)
export REVIEW_FILE := $(value FILE)
PREDICT_FLAGS := $(if $(value TEXT),--text "$$REVIEW_TEXT",) $(if $(value FILE),--file "$$REVIEW_FILE",)

.DEFAULT_GOAL := help
.PHONY: help install lock lint sweep train promote rollback reproduce distil predict serve test test-fast bench bench-serve soak levers ui server user dashboard clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  variables: EXP=<experiments/NAME.yaml>  ENGINE=optuna|keras_tuner  ARGS=\"key=value ...\" (Hydra overrides)"

UV_VERSION := 0.13.9
# The environment is what uv.lock pins (`uv lock` after editing pyproject.toml); --frozen never
# re-resolves, --inexact keeps uv itself in the venv.
$(STAMP): pyproject.toml uv.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv sync --quiet --frozen --inexact --extra dev --python $(BIN)/python
	touch $(STAMP)

install: $(STAMP) ## create .venv from uv.lock: the project with its test tools

lock: $(STAMP) ## re-resolve uv.lock after a change to pyproject.toml
	$(BIN)/uv lock

$(CHROMEDRIVER):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver

sweep: $(STAMP) ## run or resume the sweep, e.g. make sweep EXP=quick ARGS="sweep.n_trials=3" (WORKERS=N)
	$(BIN)/python -m sentiment sweep $(EXP_FLAG) $(WORKER_FLAGS) $(ARGS)

train: $(STAMP) ## train one config and log it, e.g. make train ARGS="model.units=32"
	$(BIN)/python -m sentiment train $(EXP_FLAG) $(ARGS)

promote: $(STAMP) ## move @champion to the newest version if it beats the champion (VERSION=n, FORCE=1)
	$(BIN)/python -m sentiment promote $(PROMOTE_FLAGS) $(ARGS)

rollback: $(STAMP) ## swap @champion and @previous
	$(BIN)/python -m sentiment rollback $(ARGS)

reproduce: $(STAMP) ## retrain a version (VERSION=n, default @champion) from its runs; agreement with the registered one
	$(BIN)/python -m sentiment reproduce $(if $(VERSION),--version $(VERSION),) $(ARGS)

predict: $(STAMP) ## label reviews with @champion: TEXT="...", FILE=reviews.txt, or lines on stdin
	$(BIN)/python -m sentiment predict $(PREDICT_FLAGS) $(ARGS)

serve: $(STAMP) ## REST server for @champion on 127.0.0.1 (SERVE_PORT=5001; POST /invocations)
	$(BIN)/python -m sentiment serve --port $(SERVE_PORT) $(EXP_FLAG) $(ARGS)

test: $(STAMP) $(CHROMEDRIVER) ## the whole test suite, as CI runs it (tiny generated data, real servers, a browser)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup --durations=15 $(ARGS)

lint: $(STAMP) ## ruff over the package and the tests (config in pyproject.toml)
	$(BIN)/ruff check sentiment tests

test-fast: $(STAMP) ## the edit loop: unit tests on tiny data, no sweeps, servers or browser
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not sweeps and not slow and not integration and not training" $(ARGS)

bench: $(STAMP) ## benchmark: data, throughput, memory, engine race (PRESET=small|full, BUDGET=s, CONTESTANTS="a b")
	$(BIN)/python -m sentiment bench --preset $(or $(PRESET),small) $(if $(BUDGET),--budget $(BUDGET),) $(if $(CONTESTANTS),--contestants $(CONTESTANTS),)

distil: $(STAMP) ## one model trained on a version's probabilities (VERSION=n, default @champion), registered @distilled
	$(BIN)/python -m sentiment distil $(EXP_FLAG) $(if $(VERSION),distil.teacher=$(VERSION),) $(ARGS)

bench-serve: $(STAMP) ## benchmark `make serve` on @champion (ARGS="serve.alias=distilled"): latency, throughput, memory (SECONDS=60 per scenario)
	$(BIN)/python -m sentiment bench-serve $(if $(SECONDS),--seconds $(SECONDS),) $(EXP_FLAG) $(ARGS)

soak: $(STAMP) ## the whole system under faults for MINUTES=10 on PostgreSQL: 2 workers (HOSTS=auto|namespaces|loopback), logins, serve, chaos (not a test)
	$(BIN)/python -m sentiment soak --minutes $(or $(MINUTES),10) --hosts $(or $(HOSTS),auto) $(ARGS)

levers: $(STAMP) ## what each choice of a finished study moved, val and test, e.g. make levers EXP=accuracy
	$(BIN)/python -m sentiment levers $(EXP_FLAG) $(ARGS)

ui: $(STAMP) ## MLflow UI on 127.0.0.1 (PORT=5000) over the configured store, e.g. ARGS="tracking.uri=sqlite:///other.db"
	$(BIN)/python -m sentiment ui --port $(PORT) $(EXP_FLAG) $(ARGS)

server: $(STAMP) ## MLflow tracking server, PostgreSQL store (SERVER_HOST=127.0.0.1, SERVER_PORT=5005); logins on beyond 127.0.0.1 or with AUTH=1
	$(BIN)/python -m sentiment server --host $(SERVER_HOST) --port $(SERVER_PORT) --backend-store-uri $(SERVER_DB) \
		--artifacts-destination $(CURDIR)/mlartifacts-server $(if $(filter 1 yes true,$(AUTH)),--auth,) \
		$(foreach name,$(SERVER_NAMES),--name $(name))

user: $(STAMP) ## as the server's admin, add a user: make user NAME=alice ROLE=reader|trainer ARGS="tracking.uri=http://HOST:5005"
	$(BIN)/python -m sentiment user --name "$(NAME)" --role $(or $(ROLE),reader) $(ARGS)

dashboard: $(STAMP) ## optuna-dashboard on the study storage, 127.0.0.1 (DASHBOARD_PORT=8080)
	@$(BIN)/python -c "import optuna_dashboard" 2>/dev/null || $(BIN)/uv sync --quiet --frozen --inexact --extra dev --extra dashboard --python $(BIN)/python
	$(BIN)/python -m sentiment dashboard --port $(DASHBOARD_PORT) $(EXP_FLAG) $(ARGS)

clean: ## remove local stores and caches (keeps .venv)
	rm -rf mlflow.db optuna.db optuna.journal mlartifacts mlruns keras_tuner .pytest_cache
