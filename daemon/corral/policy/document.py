"""Baseline documents: one agent's baseline as a reviewable, schema-versioned file.

`corralctl baseline export NAME` writes one, `corralctl baseline import NAME FILE` reads one
(API: GET /v1/agents/{name}/baseline?format=export, PUT /v1/agents/{name}/baseline). The
format, in YAML (JSON with the same fields is accepted and produced too)::

    apiVersion: corral.io/v3
    kind: Baseline
    metadata:
      name: demo                              # the agent
      annotations: {reviewed-by: alice}       # optional: free-form strings, kept and exported
    spec:
      modes: {exec: enforce, open: alert, connect: enforce}    # optional
      autoPromote: false                                       # optional
      promotion: {minRuns: 5, quietPeriod: 30m}                # optional: the agent's gates
      tamperAllow: [mount]                     # optional: tamper kinds the operator allowed
      exec:
      - {path: /usr/bin/python3.11, source: learned}
      - {path: /usr/bin/sh, callers: [/usr/bin/node], source: learned}  # lineage.py
      open:
      - {path: /etc/hosts, source: learned}
      - {prefix: /usr/lib/python3.11/, source: learned}        # everything beneath
      - {pattern: /tmp/agent-????????.json, source: learned}   # patterns.py: * and ?
      - {path: data.txt, relative: true, source: learned}      # as the fallback backend saw it
      connect:
      - {address: 127.0.0.1, port: 18080, source: learned}
      - {network: 10.1.2.0/24, port: 443, source: accepted}
      - {address: 10.0.0.1, port: any, source: imported}      # every port
      - {host: api.openai.com, port: 443, source: learned}     # by name (docs/names.md)
      - {host: '*.s3.amazonaws.com', port: 443, source: accepted}  # one label for the *

Exports are canonical: fixed field order, entries sorted (paths bytewise, addresses
numerically), one entry per line, no timestamps or hit counts, so a git diff of two exports
shows exactly the entries that changed. ``source`` is the entry's provenance: learned,
accepted or imported. An entry imported from a document keeps the source the document gave it
as its origin and exports it again, so export -> import -> export is byte-for-byte stable; an
entry the document gave no source is stored and exported as ``imported``.

``spec.promotion`` holds the promotion gates set for the agent by an operator (`corralctl
promotion`; policy/promotion.py), written only when there are some: a corrald from before it
refuses the field. ``spec.tamperAllow`` likewise holds the tamper-guard kinds the operator
allowed the agent (`corralctl tamper NAME --allow KIND`), sorted, written only when there are
some.

``corral.io/v2`` added ``pattern`` entries and exec ``callers`` (exec lineage: the program is
allowed only when one of them runs it; without callers, for any caller); ``corral.io/v3``
connect entries by name (``host``: the addresses the agent's own DNS answers give for it).
``corral.io/v1`` and ``v2`` documents are read as before, and exports are v3. A host is
checked here as the kernel holds names (rules.check_host); the name rules proper (IDNA, no
wildcard at or above a registrable domain) are applied by the importer (corral.names).

Paths whose bytes are not UTF-8 are written base64-encoded with ``encoding: base64``.
Validation collects every problem (up to PROBLEMS_MAX) and names each by its place in the
document, e.g. ``spec.exec[3]: path must be absolute``; nothing is applied unless the whole
document is valid.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from corral.config import GATE_COUNTS, GATES, MODES, format_duration, gate_from_json
from corral.contract import BadRequest, validate_agent_name
from corral.kernel.layout import TAMPER_KINDS

from .baseline import Baseline
from .patterns import PatternError, check_pattern, kernel_groups
from .rules import (
    PATH_DIMENSIONS,
    SOURCES,
    BaselineRules,
    Entry,
    HostKey,
    NetKey,
    Network,
    Source,
    check_host,
    normalise_network,
    normalise_path,
    path_bytes,
    path_fits,
    path_max,
)

API_VERSION = "corral.io/v3"
API_VERSIONS: tuple[str, ...] = ("corral.io/v1", "corral.io/v2", API_VERSION)  # readable
PATTERN_SINCE = "corral.io/v2"  # pattern entries and exec callers
KIND = "Baseline"
DIMS: tuple[str, ...] = ("exec", "open", "connect")
STRATEGIES: tuple[str, ...] = ("merge", "replace")
PROBLEMS_MAX = 20
ANNOTATIONS_MAX = 64
ANNOTATION_KEY_MAX = 253
ANNOTATION_VALUE_MAX = 4096
ANY_PORT = "any"

_ANNOTATION_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$")
_TOP_FIELDS = ("apiVersion", "kind", "metadata", "spec")
_METADATA_FIELDS = ("name", "annotations")
_SPEC_FIELDS = ("modes", "autoPromote", "promotion", "tamperAllow", *DIMS)
# spec.promotion's keys: the config's gate fields in camelCase
GATE_FIELDS: dict[str, str] = {
    "".join(w if i == 0 else w.title() for i, w in enumerate(g.split("_"))): g for g in GATES
}
_PATH_FIELDS = ("path", "prefix", "pattern", "relative", "encoding", "callers", "source")
_NET_FIELDS = ("address", "network", "host", "port", "source")

Strategy = Literal["merge", "replace"]


class DocumentError(BadRequest):
    """The document is not a valid baseline; ``problems`` are "where: what" lines."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        if len(problems) == 1:
            text = problems[0]
        else:
            text = f"{len(problems)} problems:\n" + "\n".join(f"  {p}" for p in problems)
        super().__init__(f"invalid baseline document: {text}")


@dataclass(frozen=True)
class DocEntry:
    """One validated entry: a path (exact or "dir/" prefix) or a (network, port)."""

    dimension: str
    key: str | NetKey | HostKey
    prefix: bool
    source: Source | None  # as declared; None when the document gave none
    where: str  # e.g. "spec.exec[3]"
    pattern: bool = False
    callers: tuple[str, ...] | None = None  # exec lineage; None: any caller
    host: bool = False  # connect by name: key is (name or "*.parent", port)


@dataclass
class Document:
    name: str
    entries: list[DocEntry]
    digest: str  # sha256 of the bytes as received, "sha256:" + 16 hex digits
    modes: dict[str, str] = field(default_factory=dict)
    auto_promote: bool | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    promotion: dict[str, float | int] | None = None  # the operator's gates; None: not given
    tamper_allow: set[str] | None = None  # the tamper kinds allowed; None: not given

    def count(self, dimension: str) -> int:
        return sum(1 for e in self.entries if e.dimension == dimension)


# ---- export -------------------------------------------------------------------------------------


class _Flow(dict):  # type: ignore[type-arg]
    """A mapping written on one line in YAML ({path: /x, source: learned})."""


def _flow_representer(dumper: yaml.SafeDumper, data: _Flow) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True)


class _FlowList(list):  # type: ignore[type-arg]
    """A list written on one line in YAML ([mount, raw-socket])."""


def _flow_list_representer(dumper: yaml.SafeDumper, data: _FlowList) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    """Double quotes (with escapes) for strings PyYAML would otherwise fold or trim: line
    breaks, including NEL/LS/PS, other non-printable characters, edge whitespace."""
    odd = data != data.strip() or any(not c.isprintable() or c in _BREAKS for c in data)
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style='"' if odd else None)


_BREAKS = frozenset("\x85\u2028\u2029\ufeff")


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Flow, _flow_representer)
_Dumper.add_representer(_FlowList, _flow_list_representer)
_Dumper.add_representer(str, _str_representer)


def _path_item(
    path: str, prefix: bool | str, source: Source, callers: set[str] | None = None
) -> _Flow:
    """prefix: False (a path), True (a "dir/" prefix) or "pattern"."""
    raw = path.encode("utf-8", "surrogateescape")
    item = _Flow()
    field = "pattern" if prefix == "pattern" else "prefix" if prefix else "path"
    try:
        item[field] = raw.decode("utf-8")
    except UnicodeDecodeError:
        item[field] = base64.b64encode(raw).decode("ascii")
        item["encoding"] = "base64"
    if not path.startswith("/"):
        item["relative"] = True
    if callers is not None:
        item["callers"] = sorted(callers, key=lambda c: c.encode("utf-8", "surrogateescape"))
    item["source"] = source
    return item


def _net_item(net: Network, port: int, source: Source) -> _Flow:
    item = _Flow()
    if net.prefixlen == net.max_prefixlen:
        item["address"] = str(net.network_address)
    else:
        item["network"] = str(net)
    item["port"] = port if port else ANY_PORT
    item["source"] = source
    return item


def _host_item(name: str, port: int, source: Source) -> _Flow:
    item = _Flow()
    item["host"] = name
    item["port"] = port if port else ANY_PORT
    item["source"] = source
    return item


def export(
    b: Baseline,
    *,
    modes: Mapping[str, str] | None = None,
    auto_promote: bool | None = None,
    promotion: Mapping[str, float | int] | None = None,
    tamper_allow: Iterable[str] = (),
) -> dict[str, Any]:
    """The canonical document of a baseline (JSON-ready; render with dump_yaml/dump_json).
    Unenforceable objects are not part of it: the kernel can never allow them."""
    metadata: dict[str, Any] = {"name": b.agent}
    if b.annotations:
        metadata["annotations"] = _Flow(sorted(b.annotations.items()))
    spec: dict[str, Any] = {}
    if modes is not None:
        spec["modes"] = _Flow((d, modes[d]) for d in DIMS if d in modes)
    if auto_promote is not None:
        spec["autoPromote"] = auto_promote
    if promotion:
        spec["promotion"] = _Flow(
            (key, int(promotion[g]) if g in GATE_COUNTS else format_duration(promotion[g]))
            for key, g in GATE_FIELDS.items()
            if g in promotion
        )
    if tamper_allow:
        spec["tamperAllow"] = _FlowList(sorted(tamper_allow))
    for d in PATH_DIMENSIONS:
        items = [(p, pre, e) for p, pre, e in b.path_entries(d)]
        items += [(g, "pattern", e) for g, e in b.pattern_entries(d)]
        items.sort(key=lambda t: (t[0].encode("utf-8", "surrogateescape"), str(t[1])))
        spec[d] = [_path_item(p, pre, e.declared_source, e.callers) for p, pre, e in items]
    spec["connect"] = [_net_item(n, p, e.declared_source) for n, p, e in b.net_entries()]
    spec["connect"] += [_host_item(n, p, e.declared_source) for n, p, e in b.host_entries()]
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}


def dump_yaml(doc: Mapping[str, Any]) -> str:
    """Block style with one flow mapping per entry; never wraps lines; same input, same bytes."""
    return yaml.dump(
        doc,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1 << 30,
        explicit_start=False,
    )


def dump_json(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


# ---- parse and validate -------------------------------------------------------------------------


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.more = 0

    def add(self, where: str, message: str) -> None:
        if len(self.items) < PROBLEMS_MAX:
            self.items.append(f"{where}: {message}")
        else:
            self.more += 1

    def raise_if_any(self) -> None:
        if not self.items:
            return
        extra = [f"... and {self.more} more"] if self.more else []
        raise DocumentError(self.items + extra)


def load(raw: bytes, fmt: Literal["yaml", "json"] = "yaml") -> Any:
    """The document's data; DocumentError for bytes that are not UTF-8 YAML/JSON."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DocumentError([f"document: not UTF-8 text (byte {e.start})"]) from None
    if fmt == "json":
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as e:
            raise DocumentError([f"document: not valid JSON: {e}"]) from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)  # CSafeLoader/SafeLoader: plain data only
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "document"
        raise DocumentError([f"{where}: not valid YAML: {e.problem or e}"]) from None
    except yaml.YAMLError as e:
        raise DocumentError([f"document: not valid YAML: {e}"]) from None
    except (ValueError, OverflowError, RecursionError) as e:
        # a scalar its tag cannot hold: 2024-13-45 (a timestamp), !!int x, 5000 digits
        raise DocumentError([f"document: not valid YAML: {e}"]) from None


def _text_problem(value: str, what: str, hint: str = "") -> str | None:
    """Lone UTF-16 surrogates ("\\ud800" escapes in JSON) are not text: they cannot be
    stored, exported or logged as UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"{what} contains {value[e.start]!r}, a lone surrogate, which is not text{hint}"
    return None


def parse(raw: bytes, fmt: Literal["yaml", "json"] = "yaml") -> Document:
    """Validates a whole document. Raises DocumentError listing every problem found."""
    data = load(raw, fmt)
    p = _Problems()
    if not isinstance(data, dict):
        p.add("document", f"must be a mapping with {', '.join(_TOP_FIELDS)}")
        p.raise_if_any()
    _unknown(data, _TOP_FIELDS, "", p)
    api = data.get("apiVersion")
    if api not in API_VERSIONS:
        got = "missing" if api is None else f"{api!r} is not supported"
        p.add("apiVersion", f"{got} (this corrald reads {', '.join(API_VERSIONS)})")
    if data.get("kind") != KIND:
        p.add("kind", f"must be {KIND}, not {data.get('kind')!r}")
    name, annotations = _metadata(data.get("metadata"), p)
    spec = data.get("spec")
    doc = Document(name=name, entries=[], digest=digest(raw), annotations=annotations)
    if not isinstance(spec, dict):
        p.add("spec", "required: a mapping with " + ", ".join(_SPEC_FIELDS))
        p.raise_if_any()
    _unknown(spec, _SPEC_FIELDS, "spec.", p)
    doc.modes = _modes(spec.get("modes"), p)
    auto = spec.get("autoPromote")
    if auto is not None and not isinstance(auto, bool):
        p.add("spec.autoPromote", f"must be true or false, not {auto!r}")
    doc.auto_promote = auto
    doc.promotion = _promotion(spec.get("promotion"), p)
    doc.tamper_allow = _tamper_allow(spec.get("tamperAllow"), p)
    seen: dict[tuple[str, Any, bool], str] = {}
    for dim in DIMS:
        items = spec.get(dim)
        if items is None:
            continue
        if not isinstance(items, list):
            p.add(f"spec.{dim}", f"must be a list of entries, not {type(items).__name__}")
            continue
        for i, item in enumerate(items):
            where = f"spec.{dim}[{i}]"
            entry = (
                _net_entry(item, where, p) if dim == "connect" else _path_entry(dim, item, where, p)
            )
            if entry is None:
                continue
            if (entry.pattern or entry.callers) and api == "corral.io/v1":
                p.add(where, f"pattern and callers need apiVersion {PATTERN_SINCE} or later")
                continue
            if entry.host and api != API_VERSION:
                p.add(where, f"host entries need apiVersion {API_VERSION}")
                continue
            ident = (dim, entry.key, "pattern" if entry.pattern else entry.prefix)
            if ident in seen:
                p.add(where, f"duplicate of {seen[ident]}")
                continue
            seen[ident] = where
            doc.entries.append(entry)
    _check_patterns(doc.entries, "spec.", p)
    p.raise_if_any()
    return doc


def _check_patterns(entries: list[DocEntry], where: str, p: _Problems) -> None:
    """The kernel holds a bounded number of patterns per literal prefix (patterns.py)."""
    for dim in PATH_DIMENSIONS:
        try:
            kernel_groups([str(e.key) for e in entries if e.pattern and e.dimension == dim])
        except PatternError as err:
            p.add(f"{where}{dim}", str(err))


def digest(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:16]


def _unknown(data: Mapping[str, Any], known: tuple[str, ...], prefix: str, p: _Problems) -> None:
    for k in data:
        if k not in known:
            p.add(f"{prefix}{k}", f"unknown field (expected: {', '.join(known)})")


def _metadata(meta: Any, p: _Problems) -> tuple[str, dict[str, str]]:
    if not isinstance(meta, dict):
        p.add("metadata", "required: a mapping with name (the agent)")
        return "", {}
    _unknown(meta, _METADATA_FIELDS, "metadata.", p)
    name = meta.get("name")
    if not isinstance(name, str):
        p.add("metadata.name", "required: the agent's name, e.g. demo or ns/Kind/name/container")
        name = ""
    else:
        try:
            validate_agent_name(name)
        except BadRequest as e:
            p.add("metadata.name", str(e))
    return name, _annotations(meta.get("annotations"), p)


def _annotations(raw: Any, p: _Problems) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        p.add("metadata.annotations", "must be a mapping of strings")
        return {}
    if len(raw) > ANNOTATIONS_MAX:
        p.add("metadata.annotations", f"{len(raw)} annotations; at most {ANNOTATIONS_MAX}")
        return {}
    out: dict[str, str] = {}
    for k, v in raw.items():
        where = f"metadata.annotations[{k!r}]"
        key_ok = isinstance(k, str) and len(k) <= ANNOTATION_KEY_MAX
        if not key_ok or not _ANNOTATION_KEY.fullmatch(k):
            p.add(where, "keys are 1-253 letters, digits, '.', '_', '-' or '/'")
        elif not isinstance(v, str):
            p.add(where, f"values must be strings (quote {v!r})")
        elif len(v) > ANNOTATION_VALUE_MAX:
            p.add(where, f"value is {len(v)} characters; at most {ANNOTATION_VALUE_MAX}")
        elif problem := _text_problem(v, "value"):
            p.add(where, problem)
        else:
            out[k] = v
    return out


def _modes(raw: Any, p: _Problems) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        p.add("spec.modes", "must be a mapping like {exec: enforce, open: alert}")
        return {}
    out: dict[str, str] = {}
    for dim, mode in raw.items():
        if dim not in DIMS:
            p.add(f"spec.modes.{dim}", f"unknown dimension (expected: {', '.join(DIMS)})")
        elif mode not in MODES:
            p.add(f"spec.modes.{dim}", f"{mode!r} is not a mode ({', '.join(MODES)})")
        else:
            out[dim] = mode
    return out


def _promotion(raw: Any, p: _Problems) -> dict[str, float | int] | None:
    """spec.promotion: {minRuns: 5, quietPeriod: 30m}; a gate left empty is not set."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        p.add("spec.promotion", "must be a mapping like {minRuns: 5, quietPeriod: 30m}")
        return None
    out: dict[str, float | int] = {}
    for key, value in raw.items():
        where = f"spec.promotion.{key}"
        if key not in GATE_FIELDS:
            p.add(where, f"unknown gate (expected: {', '.join(GATE_FIELDS)})")
        elif value is not None:
            try:
                out[GATE_FIELDS[key]] = gate_from_json(GATE_FIELDS[key], value)
            except ValueError as e:
                p.add(where, str(e))
    return out


def _tamper_allow(raw: Any, p: _Problems) -> set[str] | None:
    """spec.tamperAllow: [mount, raw-socket]; [] allows none."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        p.add("spec.tamperAllow", "must be a list of tamper kinds like [mount, raw-socket]")
        return None
    out: set[str] = set()
    for i, kind in enumerate(raw):
        if isinstance(kind, str) and kind in TAMPER_KINDS:
            out.add(kind)
        else:
            p.add(
                f"spec.tamperAllow[{i}]",
                f"{kind!r} is not a tamper kind (expected: {', '.join(TAMPER_KINDS)})",
            )
    return out


def _source(item: Mapping[str, Any], where: str, p: _Problems) -> tuple[bool, Source | None]:
    source = item.get("source")
    if source is None:
        return True, None
    if source not in SOURCES:
        p.add(where, f"source must be one of {', '.join(SOURCES)}, not {source!r}")
        return False, None
    return True, source


def _one_of(item: Any, fields: tuple[str, str], known: tuple[str, ...], where: str,
            p: _Problems) -> str | None:  # fmt: skip
    """The one key of fields the entry uses; None (problem noted) otherwise."""
    if not isinstance(item, dict):
        p.add(where, f"must be a mapping like {{{fields[0]}: ...}}, not {type(item).__name__}")
        return None
    _unknown(item, known, f"{where}.", p)
    present = [f for f in fields if f in item]
    if len(present) != 1:
        p.add(where, f"give exactly one of {' or '.join(fields)}")
        return None
    return present[0]


def _path_entry(dim: str, item: Any, where: str, p: _Problems) -> DocEntry | None:
    kind = _one_of(item, ("path", "prefix", "pattern"), _PATH_FIELDS, where, p)
    if kind is None:
        return None
    ok, source = _source(item, where, p)
    value = item[kind]
    if not isinstance(value, str) or not value:
        p.add(where, f"{kind} must be a non-empty string")
        return None
    if problem := _text_problem(value, kind, " (paths that are not UTF-8: encoding: base64)"):
        p.add(where, problem)
        return None
    encoding, relative = item.get("encoding"), item.get("relative", False)
    if encoding is not None:
        if encoding != "base64":
            p.add(where, f"encoding must be base64 (paths that are not UTF-8), not {encoding!r}")
            return None
        try:
            value = base64.b64decode(value, validate=True).decode("utf-8", "surrogateescape")
        except (binascii.Error, ValueError):
            p.add(where, f"{kind} is not valid base64")
            return None
    if not isinstance(relative, bool):
        p.add(where, f"relative must be true or false, not {relative!r}")
        return None
    problem = _path_problem(value, kind, relative)
    if problem:
        p.add(where, problem)
        return None
    if not relative and kind != "pattern":
        value = normalise_path(value)
    callers = _callers(dim, item.get("callers"), where, p)
    if not ok or callers is False:
        return None
    return DocEntry(
        dim, value, kind == "prefix", source, where, pattern=kind == "pattern", callers=callers
    )


def _callers(dim: str, value: Any, where: str, p: _Problems) -> tuple[str, ...] | bool | None:
    """An exec entry's callers (None: any caller); False when a problem was noted."""
    if value is None:
        return None
    if dim != "exec":
        p.add(where, "callers go with exec entries only")
        return False
    if not isinstance(value, list) or not value:
        p.add(where, "callers must be a non-empty list of absolute paths of executables")
        return False
    for c in value:
        if not isinstance(c, str) or not c.startswith("/") or "\0" in c:
            p.add(where, f"caller {c!r} is not the absolute path of an executable")
            return False
    return tuple(sorted(set(value)))


def _path_problem(value: str, kind: str, relative: bool) -> str | None:
    if "\0" in value:
        return f"{kind} contains a NUL byte"
    if relative and value.startswith("/"):
        return f"{kind} is absolute but relative: true is set"
    if not relative and not value.startswith("/"):
        return (
            f"{kind} must be absolute (a relative path, as the fallback open backend reports "
            "it, needs relative: true)"
        )
    if kind == "prefix" and not value.endswith("/"):
        return f"prefix must end with '/' (it allows everything beneath: {value}/)"
    if kind == "pattern":
        if relative:
            return "a pattern is an absolute path (relative: true is not allowed)"
        try:
            check_pattern(value)
        except PatternError as err:
            return str(err)
        return None
    prefix = kind == "prefix"
    if not path_fits(value, prefix=prefix):
        limit = path_max() if prefix else path_max() - 1
        return (
            f"{kind} is {path_bytes(value)} bytes; the kernel holds at most {limit} "
            "(longer paths are always denied in enforce)"
        )
    return None


def _net_entry(item: Any, where: str, p: _Problems) -> DocEntry | None:
    kind = _one_of(item, ("address", "network", "host"), _NET_FIELDS, where, p)
    if kind is None:
        return None
    ok, source = _source(item, where, p)
    if kind == "host":
        return _host_entry(item, where, p, ok, source)
    net = _network(item[kind], kind, where, p)
    port = _port(item.get("port"), where, p)
    if net is None or port is None or not ok:
        return None
    return DocEntry("connect", (net, port), False, source, where)


def _host_entry(
    item: dict[str, Any], where: str, p: _Problems, ok: bool, source: Source | None
) -> DocEntry | None:
    port = _port(item.get("port"), where, p)
    value = item["host"]
    if not isinstance(value, str):
        p.add(where, f"host must be a string, not {value!r}")
        return None
    try:
        name = check_host(value)
    except ValueError as e:
        p.add(where, str(e))
        return None
    if port is None or not ok:
        return None
    return DocEntry("connect", (name, port), False, source, where, host=True)


def _network(value: Any, kind: str, where: str, p: _Problems) -> Network | None:
    if not isinstance(value, str):
        p.add(where, f"{kind} must be a string (quote IPv6 addresses), not {value!r}")
        return None
    try:
        if kind == "address":
            if "/" in value:
                p.add(where, f"address {value!r} is a network: write network: {value}")
                return None
            return normalise_network(ipaddress.ip_address(value))  # type: ignore[arg-type]
        try:
            net = ipaddress.ip_network(value, strict=True)
        except ValueError:
            wide = ipaddress.ip_network(value, strict=False)
            p.add(where, f"network {value} has host bits set (did you mean {wide}?)")
            return None
        return normalise_network(net)
    except ValueError:
        p.add(where, f"{value!r} is not an IP {kind}")
        return None


def _port(value: Any, where: str, p: _Problems) -> int | None:
    if value == ANY_PORT:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        p.add(where, f"port must be 1-65535 or {ANY_PORT}, not {value!r}")
        return None
    if not 1 <= value <= 65535:
        extra = f" (write {ANY_PORT} for every port)" if value == 0 else ""
        p.add(where, f"port {value} is out of range 1-65535{extra}")
        return None
    return value


# ---- apply --------------------------------------------------------------------------------------


@dataclass
class Plan:
    """What an import does: the resulting baseline and the change in entries."""

    baseline: Baseline
    added: int
    removed: int
    kept: int

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


def plan(
    doc: Document,
    current: Baseline | None,
    *,
    agent: str,
    strategy: Strategy,
    rules: BaselineRules,
    now: float,
) -> Plan:
    """The baseline after importing doc; current is not modified (a dry run shows the plan).

    merge:   current's entries plus the document's (the union; nothing is removed).
    replace: exactly the document's entries; unenforceable notes and partial marks go.
    Either way an entry already stored under the same key keeps its provenance, hits and
    times (re-importing a file changes nothing), and new entries are source "imported" with
    the document's source as origin, 0 hits, first/last seen = now. No directory collapse or
    network aggregation is applied: the result holds exactly the reviewed entries."""
    if strategy == "merge" and current is not None:
        new = current.copy()
    else:
        since = current.learning_since if current else now
        new = Baseline(agent, rules=rules, learning_since=since)
        if current is not None:
            new.last_novel, new.imports = current.last_novel, list(current.imports)
            new.runs_seen, new.recent_runs = current.runs_seen, list(current.recent_runs)
    added = kept = 0
    for e in doc.entries:
        callers = None if e.callers is None else set(e.callers)
        existing = _existing(current, e)
        if existing is not None and existing.callers == callers:
            kept += 1
            if strategy == "replace":
                new.insert(e.dimension, e.key, _copy(existing), prefix=e.prefix, pattern=e.pattern)
            continue
        origin = e.source if e.source != "imported" else None
        entry = Entry(now, now, 0, "imported", origin, callers)
        new.insert(e.dimension, e.key, entry, prefix=e.prefix, pattern=e.pattern)
        added += 1
    for d in PATH_DIMENSIONS:
        try:
            kernel_groups(new.kernel_patterns(d))
        except PatternError as err:
            raise BadRequest(f"after this import, {d}: {err}") from None
    removed = len(current.keys() - new.keys()) if current is not None else 0
    new.revision = (current.revision if current else 0) + (1 if added or removed else 0)
    if strategy == "replace":
        new.annotations = dict(doc.annotations)
    else:
        new.annotations.update(doc.annotations)
    record = {"time": now, "digest": doc.digest, "strategy": strategy}
    new.record_import({**record, "added": added, "removed": removed, "kept": kept})
    return Plan(new, added, removed, kept)


def _existing(current: Baseline | None, e: DocEntry) -> Entry | None:
    if current is None:
        return None
    if e.pattern:
        return dict(current.pattern_entries(e.dimension)).get(str(e.key))
    return current.entry(e.dimension, e.key, prefix=e.prefix)


def _copy(e: Entry) -> Entry:
    callers = None if e.callers is None else set(e.callers)
    return Entry(e.first_seen, e.last_seen, e.hits, e.source, e.origin, callers)
