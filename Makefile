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

.PHONY: demo test test-slow bench setup system-packages venv clean lock bytecode

demo: setup
	$(VENV)/bin/agentix demo

test: setup
	$(PY) -m pytest -q

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

# Regenerate the lock file after changing dependencies in pyproject.toml (needs `uv`).
lock:
	uv pip compile pyproject.toml --all-extras --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
