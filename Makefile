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
# systemd: systemd-analyze, which the tests use to verify systemd/corrald.service.
# curl: the documented way to scrape /metrics over the admin socket (tested).
SYSTEM_PKGS := clang llvm libbpf-dev libbpf1 bpftool linux-libc-dev systemd curl
# Where $(PYTHON) cannot make a venv (Debian's python3 without ensurepip, or no python3 at all).
PYTHON_PKGS := python3 python3-venv
# The host suite: git lists a checkout's files (tests/ship copies a fresh clone from it);
# procps: ps, which the demo test calls (also in the VM suite); nodejs and npm: the real-agent
# corpus (tests/realagents) installs an npm MCP server and its agents launch it with npx;
# dnsmasq-base: the real DNS server the DNS-aware egress tests (tests/kernel/test_dns.py) ask.
TEST_PKGS := git procps nodejs npm dnsmasq-base
# make bench: a C compiler and static libc for its helpers, perf for profiles
BENCH_PKGS := gcc libc6-dev linux-perf
# virtme-ng builds the guest's initramfs with busybox (without it every boot ends at once with
# "initramfs is needed, and no busybox was found") and runs `file` on it and on the kernel; its
# init brings the guest's loopback up with `ip` (iproute2): without it 127.0.0.1 is unreachable.
VM_PKGS := qemu-system-x86 linux-image-amd64 linux-image-6.12-amd64 busybox-static file iproute2

.PHONY: help deps vm-deps test-deps realagents-deps venv bpf vmlinux run test test-host test-vm \
	test-vm-corpus test-fresh lint clean distclean demo wheel install uninstall bench

# `make install`: a virtualenv at PREFIX (the package and its Python dependencies, isolated from
# the system Python), the systemd unit, the configuration (kept if present) and two symlinks.
# DESTDIR stages everything under another root for packaging (scripts keep pointing at PREFIX).
PREFIX ?= /opt/corral
SYSCONFDIR ?= /etc
UNITDIR ?= /etc/systemd/system
BINDIR ?= /usr/local/bin
DESTDIR ?=
WHEEL = dist/corral-$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)-py3-none-any.whl

help:
	@echo "make deps      install the system packages corral needs to build (Debian/Ubuntu, root)"
	@echo "make run       build everything and start corrald in the foreground (local mode, root)"
	@echo "make bpf       build the CO-RE BPF objects into $(BPF_OUT)/"
	@echo "make test      the whole suite: lint, unit, host kernel tests, VM tests (BPF LSM, fmod_ret)"
	@echo "make test-host host suite only (this machine's kernel; includes the real-agent corpus)"
	@echo "make realagents-deps  the real-agent corpus's pinned packages (PyPI, npm) into $(REALAGENTS)/"
	@echo "make test-vm   VM suite only (Debian 6.1 and 6.12 kernels under QEMU)"
	@echo "make test-vm-corpus  the real-agent corpus's MCP agent on BPF LSM in the VM (slow; not in make test)"
	@echo "make test-fresh  make test on a pristine Debian 12 root (what CI runs; ~20 min, root)"
	@echo "make vmlinux   regenerate bpf/vmlinux.h from this machine's BTF"
	@echo "make bench     benchmarks (host + VM, ~25 min, root) -> docs/benchmarks.md; not part of make test"
	@echo "make demo      the walkthrough, scripted: learn, alert, enforce an injected agent (root)"
	@echo "make wheel     build $(WHEEL) (with the BPF objects inside)"
	@echo "make install   install corral into $(PREFIX) and the systemd unit (root; DESTDIR, PREFIX ok)"
	@echo "make uninstall detach corral's programs, remove what install put (config and state kept)"
	@echo "make clean     remove build outputs (BPF objects, build/, egg-info); keeps dist/ and .venv"
	@echo "make distclean clean, plus dist/ and .venv"

# Installs the Debian packages named, those not installed yet (one apt-get for all of them).
# A package that an installed one provides counts as installed: NodeSource's nodejs provides npm
# and conflicts with Debian's, which apt would install by removing it.
define apt_install
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || \
		dpkg-query -W -f='$${db:Status-Abbrev} $${Provides}\n' 2>/dev/null | \
		grep -Eq "^ii .*(^| |,)$$p( |,|$$)" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing; \
	fi
endef

deps:
	$(call apt_install,$(SYSTEM_PKGS) $(if $(shell $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null && echo ok),,$(PYTHON_PKGS)))

vm-deps:
	$(call apt_install,$(VM_PKGS))

test-deps:
	$(call apt_install,$(TEST_PKGS))

$(VENV)/.stamp: pyproject.toml | deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' virtme-ng
	touch $@

venv: $(VENV)/.stamp

# The real-agent corpus (tests/realagents, run by the host suite): unmodified third-party agent
# packages at pinned versions, in a venv and an npm project of their own under build/realagents/
# (their dependencies stay out of corral's venv). The agents' npx finds the npm MCP server in
# that project, without the network, at test time. Remade only when a pin file changes.
REALAGENTS := build/realagents
REALAGENTS_PIP := tests/realagents/requirements.txt tests/realagents/constraints.txt
REALAGENTS_NPM := tests/realagents/npm/package.json tests/realagents/npm/package-lock.json

$(REALAGENTS)/venv/.stamp: $(REALAGENTS_PIP) | deps
	rm -rf $(@D)
	$(PYTHON) -m venv $(@D)
	$(@D)/bin/python -m pip install -q --disable-pip-version-check \
		-r tests/realagents/requirements.txt -c tests/realagents/constraints.txt
	touch $@

$(REALAGENTS)/npm/.stamp: $(REALAGENTS_NPM) | test-deps
	rm -rf $(@D) && mkdir -p $(@D)
	cp $(REALAGENTS_NPM) $(@D)/
	cd $(@D) && npm ci --cache $(abspath $(REALAGENTS))/npm-cache --no-audit --no-fund \
		--loglevel=error
	touch $@

realagents-deps: test-deps $(REALAGENTS)/venv/.stamp $(REALAGENTS)/npm/.stamp

vmlinux:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/vmlinux.h

$(BPF_OUT)/%.bpf.o: bpf/%.bpf.c bpf/corral.h bpf/lsm_ret.h bpf/guard.bpf.h bpf/dns.bpf.h bpf/vmlinux.h
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
	$(PY) -m ruff check daemon bindings tests examples bench

# The README walkthrough, scripted: its own corrald (temporary state, socket and pins), the
# example agent learned, alerted on and enforced. Exits non-zero if a check fails.
demo: deps venv bpf
	$(PY) examples/demo.py

wheel: $(WHEEL)

$(WHEEL): $(BPF_OBJS) setup.py pyproject.toml $(shell find daemon bindings/bpfkit -name '*.py') $(BPF_OBJS)
	@mkdir -p dist
	$(PY) -m pip wheel -q --no-deps --wheel-dir dist .

install: $(if $(NO_BUILD),,deps venv wheel)
	@test -n "$(PREFIX)" -a "$(PREFIX)" != "/" || { echo "refusing PREFIX='$(PREFIX)'"; exit 1; }
	$(PYTHON) -m venv --clear $(DESTDIR)$(PREFIX)
	$(DESTDIR)$(PREFIX)/bin/python -m pip install -q $(WHEEL)
	@# staged (DESTDIR): scripts and activate files must name PREFIX, where the venv will live
	@if [ -n "$(DESTDIR)" ]; then \
		grep -rlI '$(DESTDIR)$(PREFIX)' $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/pyvenv.cfg \
			| xargs -r sed -i 's|$(DESTDIR)$(PREFIX)|$(PREFIX)|g'; \
	fi
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(SYSCONFDIR)/corral
	sed -e 's|/opt/corral/|$(PREFIX)/|g' -e 's|/etc/corral/|$(SYSCONFDIR)/corral/|g' \
		systemd/corrald.service > $(DESTDIR)$(UNITDIR)/corrald.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/corrald.service
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/corral/corral.yaml ]; then \
		echo "kept $(DESTDIR)$(SYSCONFDIR)/corral/corral.yaml (the new default is config/corral.yaml)"; \
	else install -m 0644 config/corral.yaml $(DESTDIR)$(SYSCONFDIR)/corral/corral.yaml; fi
	ln -sfn $(PREFIX)/bin/corrald $(DESTDIR)$(BINDIR)/corrald
	ln -sfn $(PREFIX)/bin/corralctl $(DESTDIR)$(BINDIR)/corralctl
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "installed; start it with: systemctl enable --now corrald"

# Detaches corral's programs first (a stopped corrald keeps enforcing through its pins), then
# removes what install put. The configuration and the baselines (/var/lib/corral) are kept.
uninstall:
	@test -n "$(PREFIX)" -a "$(PREFIX)" != "/" || { echo "refusing PREFIX='$(PREFIX)'"; exit 1; }
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemctl disable --now corrald 2>/dev/null || true; fi
	@if [ -z "$(DESTDIR)" ] && [ -x $(PREFIX)/bin/corrald ]; then \
		$(PREFIX)/bin/corrald $$( [ -e $(SYSCONFDIR)/corral/corral.yaml ] && echo --config $(SYSCONFDIR)/corral/corral.yaml ) cleanup || true; fi
	rm -f $(DESTDIR)$(UNITDIR)/corrald.service
	@for f in corrald corralctl; do \
		if [ "$$(readlink $(DESTDIR)$(BINDIR)/$$f)" = "$(PREFIX)/bin/$$f" ]; then rm -f $(DESTDIR)$(BINDIR)/$$f; fi; done
	rm -rf $(DESTDIR)$(PREFIX)
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "kept $(SYSCONFDIR)/corral (configuration) and the state directory (baselines): remove them by hand if you want them gone"

# Host suite: unit tests, the bindings' own tests and the kernel suite on this machine's kernel,
# the daemon and shipping tests, and the real-agent corpus (writes docs/realagents.md).
# Tests marked `deny` need a backend that denies with EPERM (BPF LSM or fmod_ret), `lsm_active`
# BPF LSM running, `lsm_inactive` BPF LSM compiled in but not active: they run in test-vm.
test-host: deps test-deps venv bpf realagents-deps
	$(PY) -m pytest -q -rs tests/unit bindings/tests tests/kernel tests/daemon tests/ship \
		tests/realagents -m "not deny and not lsm_active and not lsm_inactive"

# VM suite: the kernel suite on Debian 6.1 and 6.12 kernels (QEMU, no KVM needed), each booted
# with lsm=...,bpf and without bpf (BPF LSM compiled in, inactive). See tests/vm/run_vm.py.
test-vm: deps vm-deps test-deps venv bpf
	$(PY) tests/vm/run_vm.py --python $(PY)

# The real-agent corpus's MCP agent on BPF LSM (6.12, QEMU without KVM): learn, alert, enforce
# with its injected actions. Not part of make test: under TCG it takes far longer than CI's budget.
# The guest's report is kept in .vm-results/realagents-<kernel>.md.
test-vm-corpus: deps vm-deps test-deps venv bpf realagents-deps
	$(PY) tests/vm/run_vm.py --python $(PY) --kernels 6.12 --boots active --corpus --timeout 10800

test: lint test-host test-vm

# `make test` on a pristine Debian 12 root (debootstrap minbase), in a new mount namespace with
# fresh /proc, /sys, /dev and cgroup2 and nothing else mounted: proves that `make test` installs
# and mounts everything it needs. CI runs this. See tests/fresh/run_fresh.sh.
test-fresh:
	bash tests/fresh/run_fresh.sh

# Benchmarks (not part of make test): host syscall overhead, the example agent, event ingest,
# footprint, flip latency, then the syscall overhead inside the VM (BPF LSM). Writes
# docs/benchmarks.md, docs/benchmarks/*.png and docs/benchmarks/results.json.
# BENCH_ARGS="--parts ingest,flip" or "--quick" or "--report-only": see python -m bench --help.
bench: deps vm-deps venv bpf
	$(call apt_install,$(BENCH_PKGS))
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) -m bench $(BENCH_ARGS)

# Build outputs only. Not removed: bpf/vmlinux.h (committed), dist/ (wheels you built to ship),
# .venv, and anything outside the tree (state, pins: `corrald cleanup` removes pins).
clean:
	rm -rf $(BPF_OUT)/*.o $(BPF_OUT)/corral.h $(RULES_OUT) build *.egg-info .pytest_cache

# clean, plus the wheels in dist/ and the virtualenv.
distclean: clean
	rm -rf dist $(VENV)
