# Two commands set everything up on a fresh clone: `make repro` (the whole study on the active
# profile) and `make test`. Both create or update the virtual environment in .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1

.PHONY: venv repro test ui gpu-check

# Re-installs only when the dependencies change; constraints.txt pins the tested versions.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# DVC runs one stage at a time; on a 2-core CPU two one-thread trainings side by side are ~1.3x faster
# than one two-thread training, so the rows are trained two at a time first (`pipeline train-all`, which
# fails if any row fails); the stages that do not need trained rows (reference, keypoints, macs) run in
# the lane the last row leaves idle (`--then`). `dvc commit` then records the train stages' outputs as they are (the same
# params and code that `dvc repro` would run them with; running the finished stages instead would cost
# a process start-up of torch and MLflow per row for nothing), and `dvc repro` does everything downstream.
repro: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro prepare
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pipeline train-all --jobs 2 --threads 1 --then "dvc repro reference keypoints macs"
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc commit --force train
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# pytest exits 5 when it collected no test; make fails on any non-zero status, so that counts as failure.
test: venv
	$(BIN)/python -m pytest -n 2

ui: venv
	$(BIN)/pipeline ui

# On a GPU machine: every check that needs CUDA in one run (<= 8 min on one GPU), one JSON with the device
# name in reports/benchmarks/gpu_check.json. On a CPU-only machine it says so and exits 2.
gpu-check: venv
	$(BIN)/pipeline gpu-check
