# Every target creates the virtual environment when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# LiteLLM lives in its own environment: it is large and pins its own versions
# of libraries that the server shares. Only the integration tests use it.
LITELLM_VENV := .venv-litellm
LITELLM      := $(LITELLM_VENV)/bin/litellm
LITELLM_SPEC := litellm[proxy]==1.108.7

# The MCP Inspector CLI, a second real MCP client for the registration tests.
INSPECTOR      := .npm-tools/node_modules/.bin/mcp-inspector
INSPECTOR_SPEC := @modelcontextprotocol/inspector@0.15.0

.PHONY: setup litellm inspector demo test lint pytest clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

$(LITELLM):
	test -x $(LITELLM_VENV)/bin/python || $(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip install --quiet '$(LITELLM_SPEC)'

litellm: $(LITELLM)

$(INSPECTOR):
	npm install --silent --no-audit --no-fund --prefix .npm-tools '$(INSPECTOR_SPEC)'

inspector: $(INSPECTOR)

demo: setup
	$(BIN)/aether-mcp demo

test: lint pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

pytest: setup litellm inspector
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(LITELLM_VENV) .npm-tools .pytest_cache .mypy_cache .ruff_cache
