# keysvc — `make run` serves a development instance, `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench install clean lint openapi mutation

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# uv resolves and installs the ~120 pinned packages in seconds where pip takes minutes.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install -q -c constraints.txt uv
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/uv pip install -q -c constraints.txt -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/keysvc init --dir .keysvc
	$(BIN)/keysvc serve --config .keysvc/keysvc.toml

test: $(STAMP) lint
	bash scripts/install-test-deps
	$(BIN)/pytest -q -p no:cacheprovider

# Undefined names, unused imports and syntax errors (pyflakes rules): cheap, and never noise.
lint: $(STAMP)
	$(BIN)/ruff check --select F,E9 -q keysvc tests bench

# keysvc/openapi.json (served at GET /openapi.json) from its source, docs/openapi.yaml.
openapi: $(STAMP)
	$(BIN)/python scripts/build-openapi

bench: $(STAMP)
	bash scripts/install-bench-deps
	$(BIN)/python bench/run.py

# Mutation testing of the security core, [tool.mutmut] in pyproject.toml: about ten minutes on two
# cores. Not part of `make test` or CI; the score and every survivor are in docs/testing.md.
MUTATION_STAMP := $(VENV)/.mutation-installed

$(MUTATION_STAMP): $(STAMP)
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/uv pip install -q -c constraints.txt -e '.[test,bench,mutation]'
	touch $(MUTATION_STAMP)

mutation: $(MUTATION_STAMP)
	rm -rf mutants
	$(BIN)/mutmut run --max-children 2
	$(BIN)/python scripts/mutation_report.py

clean:
	rm -rf $(VENV) .keysvc build *.egg-info mutants
