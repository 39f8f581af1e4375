# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv and installs first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SPEC ?= ensembles/ads_ranking.yaml

.PHONY: install demo test lint docs docs-serve format clean help bench bench-precision bench-tiers bench-router bench-per-pair \
	bench-adaptive bench-pytriton bench-pools bench-realdata bench-soak bench-tune

help:
	@echo "make demo   - install, train, export, deploy, serve, send gRPC traffic, print a summary, stop"
	@echo "make test   - install, then ruff and the whole test suite (starts the real embedded tritonserver)"
	@echo "make bench  - run the benchmarks in benchmarks/ (results in benchmarks/results/)"
	@echo "make lint   - ruff check and format check, import contracts, docs site build (--strict)"
	@echo "make docs   - build the documentation site into site/ (make docs-serve: serve it locally)"
	@echo "make clean  - remove generated checkpoints, artifacts and model repository"

# Every extra but gpu (TensorRT needs an NVIDIA GPU), at the exact versions of constraints.txt.
# MovieLens-100k (the real-data benchmark and its tests) ships in RecBole's wheel, which is only read,
# never imported: installed without its many dependencies.
EXTRAS := export,serve,fleet,dev
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

$(STAMP): pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[$(EXTRAS)]'
	$(PIP) --no-deps recbole
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/toolkit train --spec $(SPEC)
	$(BIN)/toolkit export --spec $(SPEC)
	$(BIN)/toolkit deploy --spec $(SPEC)
	$(BIN)/toolkit demo --spec $(SPEC)

bench: bench-precision bench-tiers bench-per-pair bench-router bench-adaptive bench-pytriton bench-pools \
	bench-realdata bench-soak bench-tune

bench-precision: install
	$(BIN)/python benchmarks/precision.py --spec $(SPEC)

bench-tiers: install
	$(BIN)/python benchmarks/tiers.py --spec $(SPEC)

bench-router: install
	$(BIN)/python benchmarks/router_overhead.py --spec $(SPEC)

bench-per-pair: install
	$(BIN)/python benchmarks/per_pair.py --spec $(SPEC)

bench-adaptive: install
	$(BIN)/python benchmarks/adaptive.py --spec $(SPEC)

bench-pytriton: install
	$(BIN)/python benchmarks/pytriton_baseline.py --spec $(SPEC)

bench-pools: install
	$(BIN)/python benchmarks/pools.py

bench-realdata: install
	$(BIN)/python benchmarks/realdata.py

bench-soak: install
	$(BIN)/python benchmarks/soak.py --spec $(SPEC)

bench-tune: install
	$(BIN)/python benchmarks/tune.py --spec $(SPEC)

lint: install
	$(BIN)/ruff check toolkit tests benchmarks scripts
	$(BIN)/ruff format --check toolkit tests benchmarks scripts
	$(BIN)/lint-imports
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The documentation site (mkdocs.yml): `make docs` builds it into site/, `make docs-serve` serves it.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

test: lint
	$(BIN)/pytest -p no:cacheprovider

format: install
	$(BIN)/ruff format toolkit tests benchmarks scripts
	$(BIN)/ruff check --fix toolkit tests benchmarks scripts

clean:
	rm -rf checkpoints artifacts model_repository site
