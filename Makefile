# Two entry points on a fresh machine (Python 3.11+ with venv):
#   make demo   installs the package (no extras: no TensorFlow, no PyTorch) into .venv, trains
#               SAGAN (3 seeds) on the embedded digits and prints its AUC beside the PCA and
#               kNN baselines' on the same splits
#   make test   adds the test, torch and tfds extras to .venv and runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install install-test demo test clean

$(VENV)/.installed: setup.cfg requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PY) -m pip install --quiet -r requirements-test.txt
	$(PY) -m pip install --quiet -e ".[torch,test,tfds]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	$(PY) -m experiments.demo

# Two workers, one module each at a time, longest modules first (tests/conftest.py), one thread
# each. The float-sensitive tests run again under a second XLA:CPU setting (AVX2 code, XLA's
# thread pool), so an assertion that holds on one CPU only fails here before it fails for a user.
test: install-test
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder tests
	XLA_FLAGS="--xla_cpu_max_isa=AVX2" $(PY) -m pytest -q -p no:xdist -m float_sensitive tests

clean:
	rm -rf $(VENV) workdirs
