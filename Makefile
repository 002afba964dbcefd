# xai-bridge: `make demo` runs the main job, `make test` runs the test suite, `make docs` builds the docs site.
# Each creates/updates the virtual environment in $(VENV) first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.xai-bridge-installed
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c requirements/constraints.txt
OUT ?= demo-output
# `make demo` installs only what the demo imports (the `demo` extra) into its own venv, or reuses $(VENV)
# when `make test` has already installed everything there. pip shows its progress; scripts/heartbeat.py
# prints a line whenever pip is silent (unpacking torch) so the terminal never looks hung.
DEMO_VENV ?= .venv-demo
DEMO_STAMP := $(DEMO_VENV)/.xai-bridge-demo-installed
DEMO_PIP = $(PYTHON) scripts/heartbeat.py -- $(DEMO_VENV)/bin/python -m pip install --disable-pip-version-check \
	--progress-bar on -c requirements/constraints.txt
# CPU-only torch wheels (a tenth of the CUDA ones) where PyTorch's CPU index answers; PyPI's wheels otherwise
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
DEMO_PYTHON = $(if $(wildcard $(STAMP)),$(BIN)/python,$(DEMO_VENV)/bin/python)

MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs

.PHONY: install lint docs docs-strict test test-fast demo bench clean

$(STAMP): pyproject.toml requirements/constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: pip takes 2.14.1 / 0.29.1 from this machine's local wheels
	$(PIP) torch==2.14.1 torchvision==0.29.1
	$(PIP) -e '.[all,dev]'  # dev includes the docs extra: mkdocs-material, mkdocstrings
	# headless chromium for the report's browser test (Debian package; the test skips without it)
	-command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 || echo "chromium not installed: the browser test will be skipped"
	touch $(STAMP)

install: $(STAMP)

# ruff (lint + format) and mypy. mypy reads the package as installed (adapters/ is xai_bridge.adapters),
# so it checks a tree of links with that shape under build/typecheck.
TYPECHECK := build/typecheck
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/xai_bridge
	for f in xai_bridge/*; do ln -s "$(CURDIR)/$$f" $(TYPECHECK)/xai_bridge/; done
	ln -s "$(CURDIR)/adapters" $(TYPECHECK)/xai_bridge/adapters
	cd $(TYPECHECK) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p xai_bridge

# the docs site (mkdocs-material + mkdocstrings, from the docstrings; offline) into build/site
docs: $(STAMP)
	$(MKDOCS) build

# the same in strict mode: a broken link, a missing API reference or a stale name fails
docs-strict: $(STAMP)
	$(MKDOCS) build --strict

test: lint docs-strict
	$(BIN)/pytest -p no:cacheprovider

test-fast: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider -m "not slow and not browser"

$(DEMO_STAMP): pyproject.toml requirements/constraints.txt Makefile
	test -x $(DEMO_VENV)/bin/python || $(PYTHON) scripts/heartbeat.py -- $(PYTHON) -m venv $(DEMO_VENV)
	if $(PYTHON) -c "import urllib.request as u; u.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=5)" 2>/dev/null; \
	then $(DEMO_PIP) --index-url $(TORCH_CPU_INDEX) torch==2.14.1 torchvision==0.29.1; \
	else echo "$(TORCH_CPU_INDEX) does not answer: torch from PyPI (with its CUDA libraries)"; \
	$(DEMO_PIP) torch==2.14.1 torchvision==0.29.1; fi
	$(DEMO_PIP) -e '.[demo]'
	touch $(DEMO_STAMP)

demo: $(if $(wildcard $(STAMP)),$(STAMP),$(DEMO_STAMP))
	$(DEMO_PYTHON) examples/demo.py --out $(OUT)

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(DEMO_VENV) $(OUT) build *.egg-info
