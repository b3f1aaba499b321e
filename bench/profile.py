"""Profiles kept with the results: py-spy for the daemon, perf for the syscall loops."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

_LINE = re.compile(r":\d+\)$")


def _frame(f: str) -> str:
    """'decode (corral/events.py:65)' -> 'decode (corral/events.py)'."""
    return _LINE.sub(")", f.strip())


def pyspy_start(pid: int, seconds: int, rate: int = 200) -> tuple[subprocess.Popen[bytes], Path]:
    spy = Path(sys.executable).parent / "py-spy"
    out = Path(tempfile.mkstemp(prefix="corral-bench-pyspy-", suffix=".txt")[1])
    cmd = [str(spy), "record", "-p", str(pid), "-f", "raw", "-o", str(out)]
    cmd += ["-r", str(rate), "-d", str(seconds), "--nonblocking"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, out


def pyspy_collect(proc: subprocess.Popen[bytes], out: Path, top: int = 20) -> dict[str, Any]:
    proc.wait()
    selfc: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    if out.exists():
        for line in out.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not stack or not n.isdigit():
                continue
            count = int(n)
            total += count
            frames = [_frame(f) for f in stack.split(";")]
            selfc[frames[-1]] += count
            for f in set(frames):
                incl[f] += count
        out.unlink()
    if not total:
        return {"error": "py-spy recorded no samples"}
    return {
        "tool": "py-spy (sampling, --nonblocking)",
        "samples": total,
        "self": [(f, round(100 * n / total, 1)) for f, n in selfc.most_common(top)],
        "inclusive": [(f, round(100 * n / total, 1)) for f, n in incl.most_common(top + 15)],
    }


def perf_symbols(cmd: list[str], top: int = 15) -> dict[str, Any]:
    """Top symbols (self time) of cmd under `perf record`; {} when perf is unavailable."""
    if not shutil.which("perf"):
        return {}
    with tempfile.TemporaryDirectory(prefix="corral-bench-perf-") as d:
        data = str(Path(d) / "perf.data")
        r = subprocess.run(
            ["perf", "record", "-q", "-o", data, "--", *cmd], capture_output=True, text=True
        )
        if r.returncode != 0:
            return {"error": r.stderr.strip()[-500:]}
        rep = subprocess.run(
            ["perf", "report", "-i", data, "--stdio", "--no-children", "-g", "none"],
            capture_output=True,
            text=True,
        )
    rows = []
    for line in rep.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+\S+\s+(\S+)\s+\[[.k]\]\s+(.+)$", line)
        if m:
            rows.append((m.group(3).strip(), float(m.group(1)), m.group(2)))
    return {"tool": "perf record (cpu-clock)", "top": rows[:top]}
