"""Bare-node install: `make install` into a temporary PREFIX (a real venv, the real wheel, the
unit with its paths rewritten), the unit verified by systemd-analyze against that install, the
installed corrald really run, then `make uninstall` detaching its programs and removing it all.
Also the staged variant (DESTDIR) packagers use."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral import config

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: loads BPF programs")


@dataclass
class Install:
    root: Path
    pins: Path

    @property
    def vars(self) -> list[str]:
        r = self.root
        return [f"PREFIX={r}/opt/corral", f"SYSCONFDIR={r}/etc", f"UNITDIR={r}/units",
                f"BINDIR={r}/bin"]  # fmt: skip

    @property
    def unit(self) -> Path:
        return self.root / "units" / "corrald.service"

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "corral" / "corral.yaml"


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-C", str(REPO), *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    root = tmp_path_factory.mktemp("install")
    inst = Install(root, Path("/sys/fs/bpf") / f"corral-install-{uuid.uuid4().hex[:8]}")
    # An existing configuration must be kept by install; this one keeps the test off the
    # node's real pins and state.
    inst.conf.parent.mkdir(parents=True)
    inst.conf.write_text(
        f"pin_dir: {inst.pins}\nstate_dir: {root}/state\nsocket: {root}/corral.sock\n"
    )
    r = make("install", *inst.vars)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    yield inst
    make("uninstall", *inst.vars)
    if inst.pins.exists():
        subprocess.run([str(REPO / ".venv/bin/corrald"), "--pin-dir", str(inst.pins), "cleanup"])


def test_install_lays_out_venv_unit_config_and_links(installed: Install) -> None:
    r = installed.root
    for tool in ("corrald", "corralctl"):
        link = r / "bin" / tool
        assert os.readlink(link) == f"{r}/opt/corral/bin/{tool}"
        assert (r / "opt/corral/bin" / tool).read_text().startswith(f"#!{r}/opt/corral/bin/python")
    unit = installed.unit.read_text()
    assert f"ExecStart={r}/opt/corral/bin/corrald --config {r}/etc/corral/corral.yaml" in unit
    cfg = config.load(installed.conf)  # the kept file, untouched
    assert cfg.pin_dir == str(installed.pins)


def test_installed_wheel_carries_the_bpf_objects(installed: Install) -> None:
    py = installed.root / "opt/corral/bin/python"
    out = subprocess.run(
        [str(py), "-c", "import corral.kernel.loader as k; print(k.object_path()); "
         "print(k.object_path('probe.bpf.o'))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert all(p.startswith(str(installed.root / "opt/corral/lib")) for p in out), out
    headers = list((installed.root / "opt/corral/lib").glob("python3*/site-packages/corral/bpf"))
    assert headers and (headers[0] / "corral.h").is_file()


def test_installed_unit_verifies(installed: Install) -> None:
    """systemd-analyze verify: syntax, known directives, and every Exec*= binary exists (this is
    why it runs on the installed unit, whose ExecStart names the temporary PREFIX)."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing: `make deps` installs the systemd package"
    r = subprocess.run([analyze, "verify", str(installed.unit)], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_unit_hardening_exposure(installed: Install) -> None:
    """systemd-analyze security --offline: the sandbox as systemd scores it (lower is safer)."""
    r = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(installed.unit)],
        capture_output=True, text=True,
    )  # fmt: skip
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, r.stdout[-2000:] + r.stderr
    assert float(m.group(1)) <= 3.5, r.stdout


def test_installed_corrald_runs_and_uninstall_detaches(installed: Install) -> None:
    r = installed.root
    probe = subprocess.run([str(r / "bin/corrald"), "probe", "-o", "json"], capture_output=True,
                           text=True)  # fmt: skip
    assert probe.returncode in (0, 3), probe.stderr
    assert set(json.loads(probe.stdout)["capabilities"]) == {"exec", "open", "connect"}

    daemon = subprocess.Popen(
        [str(r / "bin/corrald"), "--config", str(installed.conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            st = subprocess.run(
                [str(r / "bin/corralctl"), "--socket", str(r / "corral.sock"), "-o", "json",
                 "status"], capture_output=True, text=True,
            )  # fmt: skip
            if st.returncode == 0:
                break
            assert daemon.poll() is None, daemon.stderr.read() if daemon.stderr else ""
            assert time.monotonic() < deadline, st.stderr
            time.sleep(0.2)
        assert json.loads(st.stdout)["kernel_state"]["programs"]
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    assert any(installed.pins.iterdir()), "a stopped corrald leaves its programs pinned"

    u = make("uninstall", *installed.vars)
    assert u.returncode == 0, u.stdout + u.stderr
    assert not installed.pins.exists(), "uninstall detaches the programs (corrald cleanup)"
    assert not (r / "opt/corral").exists() and not installed.unit.exists()
    assert not (r / "bin/corrald").exists() and not (r / "bin/corralctl").exists()
    assert installed.conf.is_file() and (r / "state").is_dir(), "config and baselines are kept"


def test_staged_install_for_packagers(tmp_path: Path) -> None:
    """DESTDIR: everything under the stage, scripts and links naming the final PREFIX."""
    r = make("install", f"DESTDIR={tmp_path}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    venv = tmp_path / "opt/corral"
    assert (venv / "bin/corralctl").read_text().startswith("#!/opt/corral/bin/python\n")
    assert str(tmp_path) not in (venv / "pyvenv.cfg").read_text()
    assert os.readlink(tmp_path / "usr/local/bin/corralctl") == "/opt/corral/bin/corralctl"
    assert (
        "ExecStart=/opt/corral/bin/corrald --config /etc/corral/corral.yaml"
        in (tmp_path / "etc/systemd/system/corrald.service").read_text()
    )
    config.load(tmp_path / "etc/corral/corral.yaml")
    # the venv is relocatable apart from its scripts: run it from the stage
    h = subprocess.run([str(venv / "bin/python"), "-m", "corral.cli", "--help"],
                       capture_output=True, text=True)  # fmt: skip
    assert h.returncode == 0 and "corralctl" in h.stdout
    u = make("uninstall", f"DESTDIR={tmp_path}")
    assert u.returncode == 0, u.stdout + u.stderr
    assert not venv.exists() and not (tmp_path / "usr/local/bin/corralctl").exists()
