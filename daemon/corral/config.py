"""corrald configuration: YAML file (config/corral.yaml documents every field), then flags.

Validation errors name the field and say what would be accepted, e.g.
`config.yaml: promotion.min_learning: "1 day" is not a duration (use 30s, 15m, 24h or 7d)`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

import yaml

MODES = ("off", "observe", "alert", "enforce")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class ConfigError(ValueError):
    """A bad configuration value; the message names the field and the fix."""


def parse_duration(value: Any, where: str) -> float:
    """Seconds from 90, "90s", "15m", "24h", "7d" or "250ms"."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: {value!r} is not a duration (use 30s, 15m, 24h or 7d)")
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError(f"{where}: must not be negative")
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ConfigError(f"{where}: {value!r} is not a duration (use 30s, 15m, 24h or 7d)")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class KubeletConfig:
    url: str = ""  # default: https://$NODE_IP:10250/pods (NODE_IP from the downward API)
    token_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    ca_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    insecure_skip_tls_verify: bool = False
    poll_interval: float = 2.0
    timeout: float = 5.0


@dataclass
class IdentityConfig:
    source: str = "auto"  # auto | kubernetes | local
    namespaces: list[str] = field(default_factory=list)
    exclude_namespaces: list[str] = field(default_factory=lambda: ["kube-system"])
    label_selector: str = ""
    local_globs: list[str] = field(default_factory=list)
    kubelet: KubeletConfig = field(default_factory=KubeletConfig)
    # runtimeClassName globs of pods that run in gVisor / Kata (host BPF does not see them)
    gvisor_runtime_classes: list[str] = field(
        default_factory=lambda: ["gvisor", "gvisor-*", "runsc", "runsc-*"]
    )
    kata_runtime_classes: list[str] = field(default_factory=lambda: ["kata", "kata-*"])


@dataclass
class DefaultsConfig:
    mode: str = "observe"
    auto_promote: bool = False


@dataclass
class PromotionConfig:
    min_learning: float = 24 * 3600.0
    quiet_period: float = 3600.0
    alert_period: float = 24 * 3600.0
    check_interval: float = 10.0
    min_runs: int = 3
    burst_denials: int = 10
    burst_window: float = 3600.0


# ---- promotion gates an agent may set for itself ------------------------------------------------
# The pod annotation corral.io/promotion ("min-runs=5,min-learning=2h,quiet=30m,alert=12h"),
# `corralctl promotion NAME --min-runs 5` (PUT /v1/agents/{name}/promotion) and a baseline
# document's spec.promotion each set some of these PromotionConfig fields for one agent; the
# config's value holds for the others (policy/promotion.py: which one wins).

GATES: tuple[str, ...] = (
    "min_learning",
    "quiet_period",
    "min_runs",
    "alert_period",
    "burst_denials",
    "burst_window",
)
GATE_COUNTS = frozenset({"min_runs", "burst_denials"})  # the others are durations
# the annotation's keys (and the CLI's options): the field with "-" for "_", and short forms
GATE_KEYS: dict[str, str] = {
    **{g.replace("_", "-"): g for g in GATES},
    "quiet": "quiet_period",
    "alert": "alert_period",
}
GATE_MAX_SECONDS = 365 * 86400.0
GATE_MAX_COUNT = 100_000
GATE_DURATION_HINT = "a duration from 0s to 365d: a number and s, m, h or d (90s, 30m, 2h, 7d)"
GATE_COUNT_HINT = f"a whole number from 1 to {GATE_MAX_COUNT}"
GATE_HINT = (
    "min-learning, quiet, alert and burst-window take "
    + GATE_DURATION_HINT
    + "; min-runs and burst-denials "
    + GATE_COUNT_HINT
)
# ASCII digits only, no spaces, a unit always: the API's schema says the same (openapi.yaml)
_GATE_DURATION = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,6})?)(s|m|h|d)")
_GATE_COUNT = re.compile(r"[0-9]{1,6}")


def gate_name(key: str) -> str:
    """The PromotionConfig field of a gate given as a field name (min_runs) or an annotation
    key (min-runs, quiet); ValueError naming the known ones."""
    if key in GATES:
        return key
    if key in GATE_KEYS:
        return GATE_KEYS[key]
    raise ValueError(f"unknown promotion gate {key!r}: expected one of {', '.join(GATE_KEYS)}")


def _gate_hint(name: str) -> str:
    return GATE_COUNT_HINT if name in GATE_COUNTS else GATE_DURATION_HINT


def gate_from_text(name: str, text: str) -> float | int:
    """A gate's value written as text (an annotation, a command line): "30m", "5".
    ValueError saying what is valid."""
    if name in GATE_COUNTS:
        if _GATE_COUNT.fullmatch(text) and 1 <= int(text) <= GATE_MAX_COUNT:
            return int(text)
    else:
        m = _GATE_DURATION.fullmatch(text)
        if m:
            seconds = float(m.group(1)) * _UNITS[m.group(2)]
            if seconds <= GATE_MAX_SECONDS:
                return seconds
    raise ValueError(f"{text!r} is not {_gate_hint(name)}")


def gate_from_json(name: str, value: Any) -> float | int:
    """A gate's value in a JSON (or YAML) document: counts are whole numbers; durations are
    seconds as a number, or text like "30m". ValueError saying what is valid."""
    if isinstance(value, str) and name not in GATE_COUNTS:
        return gate_from_text(name, value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if name in GATE_COUNTS:
            if isinstance(value, int) and 1 <= value <= GATE_MAX_COUNT:
                return value
        elif 0 <= value <= GATE_MAX_SECONDS:  # False for NaN
            return float(value)
    what = _gate_hint(name) + (" (or seconds as a number)" if name not in GATE_COUNTS else "")
    raise ValueError(f"{value!r} is not {what}")


def parse_gates(text: str) -> tuple[dict[str, float | int], list[str]]:
    """ "min-runs=5,min-learning=2h,quiet=30m" -> ({field: value}, problems): each valid entry
    counts; each invalid one is a problem ("what: why")."""
    gates: dict[str, float | int] = {}
    problems: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = (s.strip() for s in part.partition("="))
        try:
            if not sep:
                raise ValueError("is not key=value")
            name = gate_name(key)
            gates[name] = gate_from_text(name, value)
        except ValueError as e:
            problems.append(f"{part!r}: {e}")
    return gates, problems


def format_duration(seconds: float) -> str:
    """A gate duration as it is written: 2h, 30m, 90s, 7d (days from 2d up)."""
    if seconds == int(seconds):
        s = int(seconds)
        if s >= 2 * 86400 and s % 86400 == 0:
            return f"{s // 86400}d"
        for unit, size in (("h", 3600), ("m", 60)):
            if s and s % size == 0:
                return f"{s // size}{unit}"
        return f"{s}s"
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def format_gate(name: str, value: float | int) -> str:
    return str(int(value)) if name in GATE_COUNTS else format_duration(float(value))


@dataclass
class LearningConfig:
    collapse_threshold: int = 20
    collapse_min_depth: int = 3
    net_collapse_threshold: int = 16
    # More than this many names one label under the same parent, on the same port, become
    # "*.parent" (never at or above a registrable domain: docs/names.md)
    name_collapse_threshold: int = 8
    save_interval: float = 5.0


@dataclass
class KernelConfig:
    suppress_window: float = 60.0
    rate_limit: int = 1000
    exec_allow_entries: int = 65536
    open_allow_entries: int = 262144
    net_allow_entries: int = 65536
    # The event ring buffer shared by every CPU, in MiB (a power of two): what absorbs bursts
    # while corrald is busy or waiting for a CPU. Pages it has been through count in corrald's RSS.
    ring_buffer_mib: int = 4
    # Where BPF LSM is missing: report opens through tracepoints, or leave them unwatched.
    fallback_open: str = "report"
    # How often the probe re-proves, by effect, that the backends in use still act.
    recheck_interval: float = 300.0
    verify_interval: float = 10.0
    # Connect by name (docs/names.md): "on" reads the agents' DNS answers in the kernel
    # (cgroup_skb/ingress), so a baseline can allow api.openai.com:443 whatever its address;
    # "off" leaves connect to addresses and networks only.
    dns: str = "on"
    # How long an answer's addresses stay allowed past their TTL: applications reuse an
    # address after the TTL (Cilium needed the same); a connect after it needs a new answer.
    dns_grace: float = 300.0


@dataclass
class EventsConfig:
    buffer: int = 10000
    log_events: bool = True


@dataclass
class MetricsConfig:
    # Prometheus metrics over TCP as well as on the admin socket: HOST:PORT, [V6]:PORT or :PORT
    # (every interface). Empty: the admin socket only.
    listen: str = ""


@dataclass
class AibomConfig:
    rule_files: list[str] = field(default_factory=list)
    read_proc: bool = True
    resolve_hosts: bool = True
    dns_refresh: float = 300.0


@dataclass
class Config:
    node_name: str = ""
    state_dir: str = "/var/lib/corral"
    socket: str = "/run/corral/corral.sock"
    socket_group: str = ""
    pin_dir: str = "/sys/fs/bpf/corral"
    cgroup_root: str = ""
    log_level: str = "info"
    log_format: str = "auto"
    max_request_bytes: int = 1 << 20
    max_import_bytes: int = 16 << 20
    max_connections: int = 256
    request_timeout: float = 10.0
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    defaults: DefaultsConfig = field(default_factory=DefaultsConfig)
    promotion: PromotionConfig = field(default_factory=PromotionConfig)
    learning: LearningConfig = field(default_factory=LearningConfig)
    kernel: KernelConfig = field(default_factory=KernelConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    aibom: AibomConfig = field(default_factory=AibomConfig)

    @property
    def node(self) -> str:
        return self.node_name or os.environ.get("NODE_NAME") or socket.gethostname()

    def kubelet_url(self) -> str:
        if self.identity.kubelet.url:
            return self.identity.kubelet.url
        ip = os.environ.get("NODE_IP")
        return f"https://{ip}:10250/pods" if ip else ""

    def identity_source(self) -> str:
        """kubernetes when configured or when a kubelet URL is known, else local."""
        if self.identity.source != "auto":
            return self.identity.source
        return "kubernetes" if self.kubelet_url() else "local"


_DURATION_FIELDS = {
    "poll_interval",
    "timeout",
    "min_learning",
    "quiet_period",
    "alert_period",
    "check_interval",
    "save_interval",
    "suppress_window",
    "dns_refresh",
    "recheck_interval",
    "verify_interval",
    "dns_grace",
    "burst_window",
    "request_timeout",
}
_CHOICES = {
    "identity.source": ("auto", "kubernetes", "local"),
    "defaults.mode": MODES,
    "log_level": ("debug", "info", "warning", "error"),
    "log_format": ("auto", "json", "console"),
    "kernel.fallback_open": ("report", "off"),
    "kernel.dns": ("on", "off"),
}
_POSITIVE = {
    "kernel.rate_limit",
    "events.buffer",
    "learning.collapse_threshold",
    "learning.collapse_min_depth",
    "learning.net_collapse_threshold",
    "learning.name_collapse_threshold",
    "max_request_bytes",
    "max_import_bytes",
    "max_connections",
    "promotion.min_runs",
    "promotion.burst_denials",
    "kernel.exec_allow_entries",
    "kernel.open_allow_entries",
    "kernel.net_allow_entries",
    "kernel.ring_buffer_mib",
}
_POWERS_OF_TWO = {"kernel.ring_buffer_mib": 1024}  # and their largest value
# 0 (off) or at least this many seconds: each re-check starts a process and attaches programs
_ZERO_OR_AT_LEAST = {"kernel.recheck_interval": 1.0, "kernel.verify_interval": 1.0}
# at least this many seconds (0 would mean "no time at all", not "off")
_AT_LEAST = {"request_timeout": 0.1}


_LISTEN_FIELDS = {"metrics.listen"}
_LISTEN_HINT = "use HOST:PORT, [IPV6]:PORT or :PORT (every interface), e.g. 127.0.0.1:9464"


def parse_listen(value: str, where: str) -> tuple[str, int] | None:
    """(host, port) from "127.0.0.1:9464", "[::1]:9464" or ":9464" (host "": every interface);
    None for "" (off)."""
    if value == "":
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: {value!r} has no port 1-65535 ({_LISTEN_HINT})")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            msg = f"{where}: {host!r} is not an IPv6 address ({_LISTEN_HINT})"
            raise ConfigError(msg) from None
        return host[1:-1], int(port)
    if ":" in host or any(c.isspace() or c in "[]/" for c in host):
        raise ConfigError(f"{where}: {host!r} is not a host name or address ({_LISTEN_HINT})")
    return host, int(port)


def _build(cls: type, data: Any, where: str) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{where + '.' if where else ''}{unknown[0]}: unknown field "
            f"(known here: {', '.join(sorted(known))})"
        )
    values = {
        name: _value(hints[name], data[name], f"{where + '.' if where else ''}{name}")
        for name in data
    }
    return cls(**values)


def _value(typ: Any, raw: Any, where: str) -> Any:
    name = where.rsplit(".", 1)[-1]
    if is_dataclass(typ):
        return _build(typ, raw, where)
    if name in _DURATION_FIELDS:
        seconds = parse_duration(raw, where)
        floor = _ZERO_OR_AT_LEAST.get(where)
        if floor is not None and 0 < seconds < floor:
            raise ConfigError(f"{where}: {raw!r} is too short: use 0 (off) or at least {floor:g}s")
        least = _AT_LEAST.get(where)
        if least is not None and seconds < least:
            raise ConfigError(f"{where}: {raw!r} is too short: use at least {least:g}s")
        return seconds
    if typ is bool:
        if not isinstance(raw, bool):
            raise ConfigError(f"{where}: expected true or false, got {raw!r}")
        return raw
    if typ is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(f"{where}: expected a whole number, got {raw!r}")
        if where in _POSITIVE and raw <= 0:
            raise ConfigError(f"{where}: must be greater than 0")
        top = _POWERS_OF_TWO.get(where)
        if top is not None and (raw & (raw - 1) or raw > top):
            raise ConfigError(
                f"{where}: {raw} is not a power of two from 1 to {top} (the kernel sizes ring "
                "buffers in powers of two), e.g. 4, 8 or 16"
            )
        return raw
    if typ == list[str]:
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise ConfigError(f"{where}: expected a list of strings")
        return list(raw)
    if not isinstance(raw, str):
        raise ConfigError(f"{where}: expected a string, got {raw!r}")
    if where in _CHOICES and raw not in _CHOICES[where]:
        raise ConfigError(f"{where}: {raw!r} is not one of {', '.join(_CHOICES[where])}")
    if where in _LISTEN_FIELDS:
        parse_listen(raw, where)
    return raw


def from_dict(data: dict[str, Any] | None) -> Config:
    return _build(Config, data or {}, "")


def load(path: str | os.PathLike[str] | None) -> Config:
    """The config file (absent path = built-in defaults). Errors say file, field and fix."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file (omit --config to use the defaults)") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    try:
        return from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
