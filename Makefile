# Both targets are self-installing: they create .venv on first use and reinstall when pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install bench-host clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: anything that pulls torch later then finds it satisfied (no CUDA download).
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/edgeprune demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Host-side figures for benchmarks/results/ (each file records its command and machine).
bench-host: $(STAMP)
	$(BIN)/python -m edgeprune.training.throughput --out benchmarks/results/training_throughput
	$(BIN)/python -m edgeprune.pruning.timing --out benchmarks/results/passive_pruning_time

clean:
	rm -rf $(VENV) runs build *.egg-info
