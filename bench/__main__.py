"""`make bench`: run every benchmark, then write docs/benchmarks.md (and its plots and data).

    python -m bench                      everything (host, example agent, ingest, footprint,
                                         flip, then the VM runs)
    python -m bench --parts ingest,flip  some parts; the others keep their last results
    python -m bench --report-only        rewrite docs/benchmarks.md from the saved results
    python -m bench --quick              fewer rounds and shorter steps (a smoke run)

Results of each part go to build/bench/results/<part>.json as soon as it finishes; the report
takes the newest of those, else the copy committed in docs/benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import env, report

PARTS = ("syscalls", "workload", "ingest", "footprint", "flip", "vm", "families", "progcost")
RESULTS = env.BUILD / "results"


def cleanup_stale() -> None:
    """Pins left by an interrupted bench run (only ours: /sys/fs/bpf/corral-bench-*)."""
    from corral.kernel.loader import remove_pins

    for d in Path("/sys/fs/bpf").glob("corral-bench-*"):
        for fp in list(d.iterdir()):
            if fp.is_dir():
                remove_pins(fp)
        d.rmdir()
        env.log(f"removed stale pins {d}")


def run_part(part: str, quick: bool) -> dict[str, Any]:
    t0 = time.monotonic()
    if part == "syscalls":
        from . import syscalls

        res = syscalls.measure(rounds=5 if quick else 9, target_s=0.15 if quick else 0.3, seed=1)
    elif part == "workload":
        from . import workload

        res = workload.measure(rounds=3 if quick else 7)
    elif part == "ingest":
        from . import ingest

        secs = 2.0 if quick else ingest.STEP_SECONDS
        res = ingest.measure(seconds=secs, profile=not quick)
        # the default configuration also logs every event as a JSON line
        res["with_event_log"] = ingest.measure(
            modes=("alert",), seconds=secs, log_events=True, profile=False
        )
    elif part == "footprint":
        from . import footprint

        res = footprint.measure(agents=20 if quick else footprint.AGENTS)
    elif part == "flip":
        from . import flip

        res = flip.measure(flips=10 if quick else 40)
    elif part == "vm":
        from . import vm

        res = vm.measure(rounds=3 if quick else 9, target_s=0.5)
    elif part == "families":
        from . import families

        res = families.measure(rounds=3 if quick else 5, target_s=0.3)
    elif part == "progcost":
        from . import progcost

        res = progcost.measure(rounds=3 if quick else 5, target_s=0.3)
    else:
        raise ValueError(part)
    res["elapsed_seconds"] = round(time.monotonic() - t0, 1)
    res["quick"] = quick
    return res


def load_results() -> dict[str, Any]:
    out: dict[str, Any] = json.loads(report.DATA.read_text()) if report.DATA.exists() else {}
    for part in PARTS:
        p = RESULTS / f"{part}.json"
        if p.exists():
            out[part] = json.loads(p.read_text())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    ap.add_argument("--quick", action="store_true", help="fewer rounds, shorter steps")
    ap.add_argument("--report-only", action="store_true", help="only rewrite the report")
    a = ap.parse_args(argv)
    parts = [p for p in a.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"unknown part {unknown[0]!r}: choose from {', '.join(PARTS)}")
    env.quiet()
    if not a.report_only:
        cleanup_stale()
        env.build_helpers()
        if not os.environ.get("CORRAL_BENCH_BIN"):
            os.environ["CORRAL_BENCH_BIN"] = str(env.production_install())
        env.log(f"corrald from {os.environ['CORRAL_BENCH_BIN']}")
        env.log(f"helpers built with {env.compiler_version()}; load {env.load()}")
        RESULTS.mkdir(parents=True, exist_ok=True)
        for part in parts:
            env.log(f"== {part}")
            res = run_part(part, a.quick)
            (RESULTS / f"{part}.json").write_text(json.dumps(res, indent=1))
    path = report.write(load_results())
    env.log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
