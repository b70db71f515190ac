# Both targets are self-installing: they create .venv on first use and reinstall when pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install system-deps bench-host clean

# Debian packages: espeak-ng speaks the synthetic speech data sets; the device tests use qemu-user for the emulated
# Raspberry Pi, sshd for the SSH runner's real server on loopback, shellcheck for the board provisioning script.
# Installed only when missing (needs root/apt).
SYSTEM_TOOLS := /usr/bin/espeak-ng /usr/bin/qemu-aarch64-static /usr/sbin/sshd /usr/bin/shellcheck
SYSTEM_PACKAGES := espeak-ng qemu-user-static openssh-server shellcheck

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: anything that pulls torch later then finds it satisfied (no CUDA download).
	$(BIN)/python -m pip install -q torch==2.13.0
	# the cluster extra (Ray) too: the executor tests start a real Ray here
	$(BIN)/python -m pip install -q -e ".[dev,cluster]"
	touch $(STAMP)

system-deps:
	@missing=""; for f in $(SYSTEM_TOOLS); do test -x $$f || missing="$$missing $$f"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing $(SYSTEM_PACKAGES) (missing:$$missing)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null \
	  || { echo "could not install them: run as root, or install $(SYSTEM_PACKAGES) yourself"; exit 1; }; \
	fi

demo: $(STAMP)
	$(BIN)/edgeprune demo

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q

# Host-side figures for benchmarks/results/ (each file records its command and machine).
bench-host: $(STAMP)
	$(BIN)/python -m edgeprune.training.throughput --out benchmarks/results/training_throughput
	$(BIN)/python -m edgeprune.pruning.timing --out benchmarks/results/passive_pruning_time

clean:
	rm -rf $(VENV) runs build *.egg-info
