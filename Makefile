# digipath: set-up, demo, tests and benchmarks. Every target creates .venv when needed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

FRONTEND := src/digipath/server/frontend

$(STAMP): pyproject.toml setup.py src/digipath/io/_jpegregion.c $(FRONTEND)/package-lock.json
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "digipath needs Python >= 3.11, $(PYTHON) is " + sys.version.split()[0])'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench,server]'
	@# The web application's front-end packages (OpenSeadragon, Swagger UI), from npm, not kept in the repository.
	if command -v npm >/dev/null; then cd $(FRONTEND) && npm ci --no-audit --no-fund --silent; \
	else echo "npm not found: the slide viewer of 'digipath serve' will be unavailable"; fi
	touch $(STAMP)

demo: venv
	$(PY) examples/demo.py

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks examples

test: lint
	$(VENV)/bin/pytest

bench: venv
	$(PY) benchmarks/read_patches.py
	$(PY) benchmarks/sample_patches.py
	$(PY) benchmarks/augment.py
	$(PY) benchmarks/batches.py
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/apply.py
	$(PY) benchmarks/tissue.py
	$(PY) benchmarks/radhical.py
	$(PY) benchmarks/server.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache .ruff_cache .hypothesis test-artifacts $(FRONTEND)/node_modules
