# corral — build, test, run. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(abspath $(VENV))/bin/python
CLANG ?= clang
ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')
BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -Wall -Werror -Ibpf
BPF_OUT := daemon/corral/bpf
BPF_OBJS := $(BPF_OUT)/corral.bpf.o $(BPF_OUT)/probe.bpf.o
RULES_OUT := daemon/corral/rules/aibom.yaml
SYSTEM_PKGS := clang llvm libbpf-dev libbpf1 bpftool linux-libc-dev
VM_PKGS := qemu-system-x86 linux-image-amd64 linux-image-6.12-amd64

.PHONY: help deps vm-deps venv bpf vmlinux run test test-host test-vm lint clean

help:
	@echo "make deps      install the system packages corral needs to build (Debian/Ubuntu, root)"
	@echo "make run       build everything and start corrald in the foreground (local mode, root)"
	@echo "make bpf       build the CO-RE BPF objects into $(BPF_OUT)/"
	@echo "make test      the whole suite: lint, unit, host kernel tests, VM (BPF LSM) tests"
	@echo "make test-host host suite only (this machine's kernel)"
	@echo "make test-vm   VM suite only (Debian 6.1 and 6.12 kernels under QEMU)"
	@echo "make vmlinux   regenerate bpf/vmlinux.h from this machine's BTF"

deps:
	@missing=$$(for p in $(SYSTEM_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

vm-deps:
	@missing=$$(for p in $(VM_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' virtme-ng
	touch $@

venv: $(VENV)/.stamp

vmlinux:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/vmlinux.h

$(BPF_OUT)/%.bpf.o: bpf/%.bpf.c bpf/corral.h bpf/vmlinux.h
	@mkdir -p $(BPF_OUT)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@
	cp bpf/corral.h $(BPF_OUT)/corral.h

# The built-in AI-BOM rules travel inside the package too (an installed corrald has no config/).
$(RULES_OUT): config/aibom.yaml
	@mkdir -p $(@D)
	cp $< $@

bpf: $(BPF_OBJS) $(RULES_OUT)

# corrald in the foreground, local mode; admin socket /run/corral/corral.sock (use .venv/bin/corralctl).
run: deps venv bpf
	$(abspath $(VENV))/bin/corrald --config config/corral.yaml

lint: venv
	$(PY) -m ruff check daemon bindings tests

# Host suite: unit tests, the bindings' own tests and the kernel suite on this machine's kernel.
# Tests marked `lsm` need a kernel that loads BPF LSM programs: they run in test-vm instead.
test-host: deps venv bpf
	$(PY) -m pytest -q -rs tests/unit bindings/tests tests/kernel tests/daemon -m "not lsm"

# VM suite: the kernel suite on Debian 6.1 and 6.12 kernels with lsm=...,bpf (QEMU, no KVM needed).
test-vm: deps vm-deps venv bpf
	$(PY) tests/vm/run_vm.py --python $(PY)

test: lint test-host test-vm

clean:
	rm -rf $(BPF_OUT)/*.o $(BPF_OUT)/corral.h $(RULES_OUT) build dist *.egg-info .pytest_cache
