# Two commands set everything up on a fresh clone: `make repro` (the whole study on the active
# profile) and `make test`. Both create or update the virtual environment in .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1

.PHONY: venv repro test ui

# Re-installs only when the dependencies change; constraints.txt pins the tested versions.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

repro: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# pytest exits 5 when it collected no test; make fails on any non-zero status, so that counts as failure.
test: venv
	$(BIN)/python -m pytest -n 2

ui: venv
	$(BIN)/pipeline ui
