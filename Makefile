# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PORT ?= 8501
PYTEST_ARGS ?=

.PHONY: run test test-all test-slow test-browser bench clean

# The stamp files make a second `make run`/`make test` skip pip entirely. The project itself is
# installed editable (pyproject.toml; its dependencies are requirements.txt, installed just before),
# so app, pages, models and training import by name from anywhere, bench/ scripts included.
$(VENV)/.runtime: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --disable-pip-version-check -q -r requirements.txt
	$(PIP) install --disable-pip-version-check -q --no-deps -e .
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(PIP) install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	$(VENV)/bin/streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT)

test: $(VENV)/.dev
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: $(VENV)/.dev
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

test-browser: $(VENV)/.dev
	$(PY) -m pytest -m browser $(PYTEST_ARGS)

# Everything .ci/run runs: the default suite, then the slow and browser tests.
test-all: $(VENV)/.dev
	$(PY) -m pytest -m "" $(PYTEST_ARGS)

bench: $(VENV)/.dev
	$(PY) -m bench.latency
	$(PY) -m bench.train_throughput

clean:
	rm -rf $(VENV) .pytest_cache lesion_lens.egg-info
