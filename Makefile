# paratick: two commands for users (`make demo`, `make test`); the rest are their building blocks.
# Every target that runs Python first runs `make setup`, which finds or builds a matched pair of
# CPython interpreters (GIL and free-threaded) and one venv for each (see scripts/toolchain.py).

SHELL := /bin/bash
.DEFAULT_GOAL := help

#: Any python3 (3.9+) runs the toolchain script; it runs before any venv exists.
PYTHON ?= python3
PY_GIL := .venv/gil/bin/python
PY_FT := .venv/ft/bin/python
LINT_PATHS := sim server clients bench tests scripts
#: Extra pytest arguments, e.g. `make test PYTEST_ARGS="-x tests/sim"`.
PYTEST_ARGS ?=

# One line saying which interpreter a step runs under: path, version, build flag, GIL state.
WHICH = -c 'import sys, sysconfig; print(sys.executable, sys.version.split()[0], \
"Py_GIL_DISABLED=%d" % int(sysconfig.get_config_var("Py_GIL_DISABLED") or 0), \
"GIL enabled" if getattr(sys, "_is_gil_enabled", lambda: True)() else "GIL disabled")'

# $(call pytest_under,PYTHON,LABEL): run pytest and turn exit status 5 (no tests collected) into a
# failure, so a broken collection can never look like a green run.
define pytest_under
	@echo "==> pytest under $(2): $$($(1) $(WHICH))"
	@$(1) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then \
	  echo "==> FAIL [$(2)]: pytest collected no tests (exit 5); an empty run is not a pass"; exit 1; \
	elif [ $$rc -ne 0 ]; then \
	  echo "==> FAIL [$(2)]: pytest exit status $$rc"; exit $$rc; \
	fi; echo "==> ok [$(2)]: pytest passed"
endef

.PHONY: help setup test lint demo clean check-lint check-types check-gil check-ft

help:
	@echo "make demo   set up, then: one world on both builds, a server with bots, a quick scaling table"
	@echo "make test   set up, then ruff + mypy, then pytest under the GIL and the free-threaded build"
	@echo "make setup  find or build the interpreter pair and create .venv/gil and .venv/ft"
	@echo "make lint   set up, then ruff + mypy only"
	@echo "make clean  remove .venv (the interpreter cache in ~/.cache/paratick is kept)"

setup:
	@$(PYTHON) scripts/toolchain.py setup

# -k: a lint failure still lets both pytest runs report; make exits non-zero if any step failed.
test: setup
	@$(MAKE) --no-print-directory -k check-lint check-types check-gil check-ft; rc=$$?; \
	if [ $$rc -eq 0 ]; then echo "==> make test: ruff, mypy and pytest (GIL + free-threaded) passed"; \
	else echo "==> make test: FAILED (see the FAIL lines above)"; fi; exit $$rc

lint: setup
	@$(MAKE) --no-print-directory -k check-lint check-types

demo: setup
	@bash scripts/demo.sh

clean:
	rm -rf .venv

check-lint:
	@echo "==> ruff under $$($(PY_GIL) $(WHICH))"
	@$(PY_GIL) -m ruff check $(LINT_PATHS) || { echo "==> FAIL: ruff"; exit 1; }

# mypy runs under the GIL build only: its compiled dependencies have no free-threaded wheels
# (see the `lint` extra in pyproject.toml).  Types do not depend on the build.
check-types:
	@echo "==> mypy under $$($(PY_GIL) $(WHICH))"
	@$(PY_GIL) -m mypy || { echo "==> FAIL: mypy"; exit 1; }

check-gil:
	$(call pytest_under,$(PY_GIL),gil)

check-ft:
	$(call pytest_under,$(PY_FT),ft)
