# Two commands do everything on a fresh machine:
#   make demo   set up, then run the main job (a rank sweep on the embedded model and data)
#   make test   set up, then run the test suite
# The set-up makes .venv; it reuses a torch that the Python already has, else installs a CPU torch.

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin

.PHONY: setup demo test test-all figures clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
	  if $(PYTHON) -c "import torch" 2>/dev/null; then \
	    echo "using the torch already installed for $(PYTHON)"; $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else $(PYTHON) -m venv $(VENV); fi; fi
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	@touch $@

demo: setup
	$(BIN)/lowrank-lab rank-sweep

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m "not gpu"

clean:
	rm -rf $(VENV) runs .pytest_cache
