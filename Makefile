# Two commands do all the set-up on a fresh machine (CPython 3.11, pip reaching PyPI):
#   make demo   run the main job (the ROS graph searching a sample scene in simulation)
#   make test   run the whole test suite
# Both create .venv and install everything into it first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/panoseeker launch --demo --overlay out/demo_overlay.png

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile test

bench: $(STAMP)
	$(BIN)/python bench/projection.py
	$(BIN)/python bench/egosphere.py
	$(BIN)/python bench/graph_step.py

clean:
	rm -rf $(VENV) out build *.egg-info
