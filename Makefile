# The two commands of the README: `make main` (the main job) and `make test`.
# Both create the virtual environment in .venv/ when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Which torch .venv holds: requirements/torch-$(PROFILE).txt. default: the development build;
# xformers: the GPU install whose xformers kernels load (`make env PROFILE=xformers`, DEVELOPERS.md).
# The choice is kept in .venv/profile, so later `make` calls keep it.
PROFILE ?= $(or $(shell cat $(VENV)/profile 2>/dev/null),default)
STAMP := $(VENV)/.installed-$(PROFILE)

.PHONY: main test bench env clean-env

$(STAMP): pyproject.toml requirements/no-deps.txt requirements/torch-$(PROFILE).txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	rm -f $(VENV)/.installed*
	$(BIN)/pip install -q --upgrade pip
	# torch (and torchvision, xformers) first, from the profile's pins (see DEVELOPERS.md)
	$(BIN)/pip install -q -r requirements/torch-$(PROFILE).txt
	# our package with every extra (pyproject.toml), then the exact Composer and torchtune
	$(BIN)/pip install -q -e '.[test,train,loggers,modern,xformers,bench]'
	$(BIN)/pip install -q --no-deps -r requirements/no-deps.txt
	echo $(PROFILE) > $(VENV)/profile
	touch $@

env: $(STAMP)

main: $(STAMP)
	$(BIN)/protjepa train recipes/mlm_jepa_masked.yaml --main-job

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/protjepa bench

clean-env:
	rm -rf $(VENV)
