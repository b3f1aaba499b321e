"""corrald: the node daemon's command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path

import structlog

from . import config as config_mod
from . import logs

log = structlog.get_logger("corral.daemon")

DESCRIPTION = """\
corrald fences AI agents in at the kernel level. It learns each agent's exec, file-open and
connect behaviour from what the kernel reports, then moves the agent, per dimension, from
observe (learn, allow) to alert (allow, report deviations) to enforce (the kernel denies
deviations). No sidecar, no restart of the agent.

commands:
  run        (default) start the daemon in the foreground
  probe      report what this kernel can enforce (BTF, cgroup v2, bpffs, BPF LSM, ...)
  cleanup    remove everything corrald pinned in bpffs: enforcement stops
"""

EPILOG = """\
examples:
  corrald                                   local mode, defaults, socket /run/corral/corral.sock
  corrald --config /etc/corral/corral.yaml  as the systemd unit and the DaemonSet run it
  corrald probe -o json                     what is enforced here, machine-readable
  corrald cleanup                           after uninstalling: detach all programs

signals: SIGTERM/SIGINT stop the daemon (pinned programs keep enforcing; a restart adopts them),
SIGHUP reloads the configuration file.

exit codes: 0 clean stop; 1 runtime error; 2 usage or configuration error; 3 (probe) some
dimension has no working hook on this kernel.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="corrald",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="FILE", help="YAML configuration (see config/corral.yaml)")
    p.add_argument(
        "--state-dir", metavar="DIR", help="baselines and agents (default /var/lib/corral)"
    )
    p.add_argument(
        "--socket", metavar="PATH", help="admin API socket (default /run/corral/corral.sock)"
    )
    p.add_argument(
        "--pin-dir", metavar="DIR", help="bpffs directory for pins (default /sys/fs/bpf/corral)"
    )
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["auto", "json", "console"])
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", help="start the daemon (the default)")
    probe = sub.add_parser(
        "probe",
        help="report kernel features and which backend enforces each dimension",
        description="Probe the running kernel and print which backend decides exec, open and "
        "connect here: enforce (BPF LSM, fmod_ret or cgroup), kill (tracepoint + SIGKILL) or "
        "observe only. Each backend is proven by its effect: tiny BPF programs are attached and "
        "a child process's exec, open and connect must be seen denied (or killed) by them; a "
        "program that only loads proves nothing. Mounts bpffs, securityfs and tracefs if missing.",
    )
    probe.add_argument("-o", "--output", choices=["table", "json"], default="table")
    sub.add_parser(
        "cleanup",
        help="unpin corrald's programs and maps (enforcement stops)",
        description="Remove every pin under the pin directory. Programs detach and "
        "enforcement stops. Baselines in the state directory are kept.",
    )
    return p


def load_config(args: argparse.Namespace) -> config_mod.Config:
    cfg = config_mod.load(args.config)
    for flag, attr in (
        ("state_dir", "state_dir"),
        ("socket", "socket"),
        ("pin_dir", "pin_dir"),
        ("log_level", "log_level"),
        ("log_format", "log_format"),
    ):
        value = getattr(args, flag, None)
        if value:
            setattr(cfg, attr, value)
    return cfg


def cmd_probe(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    from corral.kernel.probe import render_table, run_probe

    res = run_probe(fallback_open=cfg.kernel.fallback_open)
    print(json.dumps(res.to_dict(), indent=2) if args.output == "json" else render_table(res))
    return 0 if all(c["mode"] != "unavailable" for c in res.capabilities.values()) else 3


def cmd_cleanup(cfg: config_mod.Config) -> int:
    from corral.kernel.loader import remove_pins

    root = Path(cfg.pin_dir)
    if not root.is_dir():
        print(f"nothing pinned at {root}")
        return 0
    total = sum(remove_pins(d) for d in list(root.iterdir()) if d.is_dir())
    root.rmdir()
    print(f"removed {total} pins under {root}; corral no longer enforces on this node")
    return 0


async def serve(cfg: config_mod.Config, config_path: str | None) -> int:
    from corral.api import metrics
    from corral.api.guard import RateLimitedErrors
    from corral.api.server import start_api

    from .app import Node

    asyncio.get_running_loop().set_exception_handler(RateLimitedErrors())
    node = Node(cfg)
    try:
        await node.start()
    except BaseException:
        # what started must stop, or its tasks keep asyncio.run (and corrald) from ending
        with contextlib.suppress(Exception):
            await node.stop()
        raise
    api = await start_api(
        node.services,
        cfg.socket,
        group=cfg.socket_group or None,
        max_body=cfg.max_request_bytes,
        metrics=node.metrics.registry,
        max_import=cfg.max_import_bytes,
        max_connections=cfg.max_connections,
        request_timeout=cfg.request_timeout,
    )
    listen = config_mod.parse_listen(cfg.metrics.listen, "metrics.listen")
    try:
        tcp = await metrics.start_tcp(node.metrics.registry, *listen) if listen else None
    except metrics.MetricsStartError:
        await api.close()
        await node.stop()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: _reload(node, config_path))
    await stop.wait()
    log.info("stopping")
    if tcp is not None:
        await tcp.close()
    await api.close()
    await node.stop()
    return 0


def _reload(node: object, config_path: str | None) -> None:
    """SIGHUP: settings that apply live (logging, defaults, promotion, learning, events, AI-BOM
    rules). kernel.* and the paths are read at start only."""
    try:
        new = config_mod.load(config_path)
    except config_mod.ConfigError as e:
        log.error("reload failed; keeping the running configuration", error=str(e))
        return
    cfg = node.cfg  # type: ignore[attr-defined]
    for section in ("defaults", "promotion", "learning", "events"):
        setattr(cfg, section, getattr(new, section))
    try:
        node.reload_aibom_rules(new.aibom.rule_files)  # type: ignore[attr-defined]
    except config_mod.ConfigError as e:
        log.error("AI-BOM rules not reloaded; keeping the running rules", error=str(e))
    cfg.log_level = new.log_level
    logs.setup(cfg.log_level, cfg.log_format)
    log.info("configuration reloaded", path=config_path, not_reloaded="kernel.*, paths: restart")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = load_config(args)
        if args.command in (None, "run"):
            from corral.aibom.rulefile import load_rules

            load_rules(cfg.aibom.rule_files)  # a bad rule file stops corrald here, exit 2
    except config_mod.ConfigError as e:
        print(f"corrald: {e}", file=sys.stderr)
        return 2
    logs.setup(cfg.log_level, cfg.log_format)
    if args.command == "probe":
        return cmd_probe(args, cfg)
    if args.command == "cleanup":
        return cmd_cleanup(cfg)
    from .memory import one_arena

    one_arena()  # before the first worker thread: freed heap can then be trimmed
    try:
        return asyncio.run(serve(cfg, args.config))
    except KeyboardInterrupt:
        return 0
    except Exception as e:
        log.exception("corrald failed", error=str(e))
        return 1


if __name__ == "__main__":
    sys.exit(main())
