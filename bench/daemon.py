"""A real corrald for the benchmarks: its own state dir, socket and pins; start-up time, RSS and
CPU read from /proc; agents started the way `corralctl run` starts them (fork, POST /run, go)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from corral.cli.client import Client
from corral.kernel.loader import remove_pins

from .env import BUILD


# corrald as users install it (bench/__main__ sets this: env.production_install()), else the
# one beside this interpreter
def corral_bin() -> Path:
    return Path(os.environ.get("CORRAL_BENCH_BIN") or Path(sys.executable).parent)


CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class Corrald:
    """One corrald process. `config` is merged over bench defaults (quiet logs, fast saves)."""

    def __init__(self, workdir: Path, config: dict[str, Any] | None = None) -> None:
        self.dir = workdir
        self.state = workdir / "state"
        self.sock = workdir / "corral.sock"
        self.pins = Path("/sys/fs/bpf") / f"corral-bench-{uuid.uuid4().hex[:8]}"
        self.cfg_path = workdir / "corral.yaml"
        cfg: dict[str, Any] = {
            "log_format": "json",
            "log_level": "warning",
            "events": {"log_events": False},
        }
        for k, v in (config or {}).items():
            cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
        self.cfg_path.write_text(yaml.safe_dump(cfg))
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = Client(str(self.sock), timeout=120)
        self.startup_seconds = 0.0

    def start(self, timeout: float = 600) -> float:
        """Starts corrald; returns seconds from exec to the first answered API request."""
        if self.proc is not None and self.proc.poll() is None:
            return self.startup_seconds
        self.log = open(self.dir / "corrald.log", "ab")  # noqa: SIM115
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [
                str(corral_bin() / "corrald"),
                "--config",
                str(self.cfg_path),
                "--state-dir",
                str(self.state),
                "--socket",
                str(self.sock),
                "--pin-dir",
                str(self.pins),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"corrald exited: {self.logs()[-3000:]}")
            if self.sock.exists():
                with contextlib.suppress(Exception):
                    self.client.request("GET", "/v1/status")
                    self.startup_seconds = time.monotonic() - t0
                    return self.startup_seconds
            time.sleep(0.02)
        raise RuntimeError(f"corrald did not answer within {timeout}s: {self.logs()[-3000:]}")

    def logs(self) -> str:
        return (self.dir / "corrald.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup_pins(self) -> None:
        if self.pins.exists():
            for fp in list(self.pins.iterdir()):
                remove_pins(fp)
            self.pins.rmdir()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # ---- /proc ----------------------------------------------------------------------------

    def memory(self) -> dict[str, float]:
        """VmRSS, VmHWM (peak RSS) and Pss in MiB."""
        out: dict[str, float] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) / 1024
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    out["Pss"] = int(line.split()[1]) / 1024
        return out

    def cpu_seconds(self) -> float:
        """user + system CPU time of corrald so far."""
        stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(stat[11]) + int(stat[12])) / CLK_TCK

    # ---- API ------------------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None) -> Any:
        return self.client.request(method, path, body)

    def agent_path(self, agent: str, tail: str = "") -> str:
        p = f"/v1/agents/{urllib.parse.quote(agent, safe='')}"
        return f"{p}/{tail}" if tail else p

    def set_mode(self, agent: str, mode: str | None = None, **dims: str) -> Any:
        body: dict[str, str] = dict(dims)
        if mode:
            body["mode"] = mode
        return self.api("PUT", self.agent_path(agent, "mode"), body)

    def spawn(self, agent: str, argv: list[str], stdout: int | None = None) -> int:
        """Forks argv held on a pipe, moves it into the agent's cgroup with POST /run (as
        `corralctl run` does), then lets it exec. Returns the pid (reap it with os.wait4)."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            try:
                os.close(w)
                if os.read(r, 2) != b"go":
                    os._exit(1)
                if stdout is not None:
                    os.dup2(stdout, 1)
                os.execv(argv[0], argv)
            finally:
                os._exit(127)
        os.close(r)
        try:
            self.api("POST", self.agent_path(agent, "run"), {"pid": pid})
        except BaseException:
            os.close(w)
            os.waitpid(pid, 0)
            raise
        os.write(w, b"go")
        os.close(w)
        return pid


@contextlib.contextmanager
def corrald(config: dict[str, Any] | None = None, keep: Path | None = None) -> Iterator[Corrald]:
    """A started corrald in a temporary directory; stopped and unpinned at the end."""
    work = Path(tempfile.mkdtemp(prefix="corral-bench-"))
    d = Corrald(work, config)
    if keep is not None:
        shutil.copytree(keep, d.state)
    try:
        d.start()
        yield d
    except BaseException:
        keep_log = BUILD / "corrald-failed.log"
        keep_log.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            shutil.copy(work / "corrald.log", keep_log)
            print(f"corrald's log kept in {keep_log}", file=sys.stderr)
        raise
    finally:
        d.stop()
        d.cleanup_pins()
        shutil.rmtree(work, ignore_errors=True)


def wait4(pid: int) -> tuple[int, float]:
    """(exit status, CPU seconds of the child and its reaped descendants)."""
    _, status, ru = os.wait4(pid, 0)
    return status, ru.ru_utime + ru.ru_stime
