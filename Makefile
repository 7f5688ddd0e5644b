# The two commands of the README: `make main` (the main job) and `make test`.
# Both create the virtual environment in .venv/ when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: main test bench env clean-env

$(STAMP): pyproject.toml requirements/no-deps.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch and torchvision first, from the pinned wheels (see DEVELOPERS.md)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	# our package with every extra (pyproject.toml), then the exact Composer and torchtune
	$(BIN)/pip install -q -e '.[test,train,loggers,modern,xformers,bench]'
	$(BIN)/pip install -q --no-deps -r requirements/no-deps.txt
	touch $(STAMP)

env: $(STAMP)

main: $(STAMP)
	$(BIN)/protjepa train recipes/mlm_jepa_masked.yaml --main-job

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/protjepa bench

clean-env:
	rm -rf $(VENV)
