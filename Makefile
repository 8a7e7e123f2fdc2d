# agentix — two commands on a fresh Debian machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
# Debian packages: bubblewrap (namespaces, mounts) and libseccomp (seccomp filter) for the sandbox;
# docker-registry (the CNCF distribution registry) for the package tests on a loopback registry;
# chromium for the dashboard's browser tests (driven by Playwright; no browser download)
APT_PACKAGES := bubblewrap libseccomp2 docker-registry chromium
EXTRAS ?= dev,http,mcp,observe,langchain,openai-agents,a2a
# CrewAI cannot share the main venv (it pins mcp<2, openai<3, pydantic<2.13): it gets an
# environment of its own, built from its own lock by uv (pinned; installed into the main venv)
CREWAI_VENV  ?= .venv-crewai
CREWAI_STAMP := $(CREWAI_VENV)/.installed
UV_VERSION   := 0.13.9
UV           := $(VENV)/bin/uv

.PHONY: demo test test-main test-crewai test-slow bench setup crewai-venv system-packages venv clean lock bytecode

demo: setup
	$(VENV)/bin/agentix demo

# the main suite, then the CrewAI adapter test in CrewAI's own environment (the main suite skips
# it, saying why: crewai is not installed there)
test: test-main test-crewai

test-main: setup
	$(PY) -m pytest -q

# the kernel runs in-process under .venv-crewai's Python, so its sandboxed agents (which run
# that interpreter, with that venv bound read-only) import crewai
test-crewai: setup crewai-venv
	$(CREWAI_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/adapters/test_crewai.py

test-slow: setup
	$(PY) -m pytest -q -m slow

# every bench/*.py (floors first), then one summary table; BENCH_ARGS=--quick for a smoke run
bench: setup
	$(PY) bench/_run_all.py $(BENCH_ARGS)

setup: system-packages $(STAMP) bytecode

# compile the package once, so neither the CLI nor an agent (whose sandbox sees src/ read-only)
# compiles agentix at every start; only changed files are recompiled
bytecode: $(STAMP)
	@$(PY) -m compileall -q src >/dev/null

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.lock
	$(PIP) install -q --no-deps -e '.[$(EXTRAS)]'
	touch $(STAMP)

venv: $(STAMP)

$(UV): $(STAMP)
	$(PIP) install -q uv==$(UV_VERSION)
	touch $(UV)

# rebuilt only when its lock (or pyproject.toml) changed; `uv pip sync` installs exactly the
# lock (from uv's cache after the first time), compiled, since the sandbox sees it read-only
crewai-venv: $(CREWAI_STAMP)

$(CREWAI_STAMP): requirements-crewai.lock pyproject.toml | $(UV)
	$(UV) venv -q --allow-existing --no-python-downloads --python $(PYTHON) $(CREWAI_VENV)
	$(UV) pip sync -q --compile-bytecode --python $(CREWAI_VENV)/bin/python requirements-crewai.lock
	$(UV) pip install -q --no-deps --python $(CREWAI_VENV)/bin/python -e .
	touch $(CREWAI_STAMP)

# Regenerate the lock files after changing dependencies in pyproject.toml or requirements-crewai.in
lock: $(UV)
	$(UV) pip compile -q pyproject.toml --all-extras --python-version 3.11 -o requirements.lock
	$(UV) pip compile -q pyproject.toml requirements-crewai.in --python-version 3.11 -o requirements-crewai.lock

clean:
	rm -rf $(VENV) $(CREWAI_VENV) build *.egg-info src/*.egg-info
