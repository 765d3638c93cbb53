# Two-command setup: `make train` and `make test` (see README.md).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION := 2.13.0
# where pip finds the CPU-only torch wheel: this machine's pip configuration (find-links) by default; elsewhere, e.g.
# `make train TORCH_INDEX=https://download.pytorch.org/whl/cpu` (PyPI's Linux torch wheel is the CUDA build)
TORCH_INDEX ?=
LINT_PATHS := sb3_cherry tests benchmarks

.PHONY: install train test test-slow lint format type docs check-codestyle commit-checks clean

# The stamp file is rebuilt when the packaging (or this file's install steps) changes.
$(VENV)/.installed: pyproject.toml setup.cfg Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	# torch first, pinned: the CPU wheel (available locally here, TORCH_INDEX elsewhere); a bare `torch` would pull a
	# CUDA build
	$(PIP) install torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	# envs: MuJoCo + Box2D (the optional environments every config and test of the design card uses)
	$(PIP) install -e ".[envs,tests,imitation,distributed,envpool,docs]"
	# imitation's metadata pins an old SB3/gymnasium: install it without its dependencies
	# (the packages its modules import are dependencies of sb3_cherry)
	$(PIP) install --no-deps imitation==1.0.1
	touch $@

install: $(VENV)/.installed

train: install
	$(VENV)/bin/sb3-cherry train --algo ppo_rollback --env CartPole-v1 -f logs --seed 0 --progress --eval-freq -1
	$(VENV)/bin/sb3-cherry evaluate --algo ppo_rollback --env CartPole-v1 -f logs -n 10

# What CI runs (.ci/run): the style, type and docs checks first (seconds), then the fast test suite
test: install lint check-codestyle type docs
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

lint: install
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/black --check $(LINT_PATHS)

format: install
	$(VENV)/bin/ruff check --select I --fix $(LINT_PATHS)
	$(VENV)/bin/black $(LINT_PATHS)

check-codestyle: install
	$(VENV)/bin/ruff check --select I $(LINT_PATHS)
	$(VENV)/bin/black --check $(LINT_PATHS)

type: install
	$(VENV)/bin/mypy sb3_cherry

# Sphinx HTML in docs/_build/html; -W: any warning fails the build
docs: install
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html

commit-checks: format type lint

clean:
	rm -rf $(VENV) logs .pytest_cache .ruff_cache *.egg-info docs/_build build dist
