"""Reading the AI-BOM rule files: the built-in config/aibom.yaml plus the operator's files,
validated (every error names its file and item) and merged into one `Rules`."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from .rules import (
    _HOSTNAME,
    ENDPOINT_KINDS,
    EXECUTABLE_KINDS,
    RULES_VERSION,
    SECTIONS,
    EndpointRule,
    ExecutableRule,
    McpExecRule,
    ModelRule,
    PackageRule,
    Rules,
    RulesError,
)


def default_rules_path() -> Path:
    """The built-in rules: config/aibom.yaml of the source tree (a checkout, an editable
    install), else corral/rules/aibom.yaml in an installed package (copied there by `make bpf`
    before the package is built)."""
    here = Path(__file__).resolve().parents[1]  # the corral package
    for candidate in (here.parents[1] / "config" / "aibom.yaml", here / "rules" / "aibom.yaml"):
        if candidate.is_file():
            return candidate
    raise RulesError(
        "the built-in AI-BOM rules are missing (config/aibom.yaml in the source tree, "
        "corral/rules/aibom.yaml when installed): reinstall corral or run `make bpf`"
    )


def load_rules(
    extra_files: Sequence[str | os.PathLike[str]] = (),
    *,
    builtin: str | os.PathLike[str] | None = None,
) -> Rules:
    """The built-in rules plus extra_files (consulted first; same-named rules replace)."""
    base = Path(builtin) if builtin is not None else default_rules_path()
    layers = [_read_file(Path(p)) for p in extra_files] + [_read_file(base)]
    merged: dict[str, list[tuple[str, dict[str, Any]]]] = {s: [] for s in SECTIONS}
    for where, data in layers:
        for section in SECTIONS:
            taken = {name for name, _ in merged[section]}
            for i, item in enumerate(data.get(section) or []):
                name = _rule_name(item, f"{where}: {section}[{i}]")
                if name not in taken:
                    merged[section].append(
                        (name, {"__where__": f"{where}: {section}[{i}]", **item})
                    )
    return _build(merged, tuple(str(p) for p in [*extra_files, base]))


def parse_rules(data: Any, where: str = "rules") -> Rules:
    """One rule document (already parsed YAML) on its own: for tests and validation."""
    checked = _check_document(data, where)
    merged = {
        s: [
            (_rule_name(item, f"{where}: {s}[{i}]"), {"__where__": f"{where}: {s}[{i}]", **item})
            for i, item in enumerate(checked.get(s) or [])
        ]
        for s in SECTIONS
    }
    return _build(merged, (where,))


def _read_file(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RulesError(f"{path}: no such AI-BOM rule file (check aibom.rule_files)") from None
    except OSError as e:
        raise RulesError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise RulesError(f"{path}: not valid YAML: {e}") from None
    return str(path), _check_document(data, str(path))


def _check_document(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise RulesError(f"{where}: expected a mapping with version: 1 and rule sections")
    unknown = sorted(set(data) - {"version", *SECTIONS})
    if unknown:
        raise RulesError(
            f"{where}: {unknown[0]}: unknown section (known: version, {', '.join(SECTIONS)})"
        )
    if data.get("version") != RULES_VERSION:
        raise RulesError(f"{where}: version: expected {RULES_VERSION}, got {data.get('version')!r}")
    for section in SECTIONS:
        items = data.get(section)
        if items is not None and not isinstance(items, list):
            raise RulesError(f"{where}: {section}: expected a list of rules")
        names: set[str] = set()
        for i, item in enumerate(items or []):
            name = _rule_name(item, f"{where}: {section}[{i}]")
            if name in names:
                raise RulesError(f"{where}: {section}[{i}] ({name}): duplicate rule name")
            names.add(name)
    return data


def _rule_name(item: Any, where: str) -> str:
    if not isinstance(item, dict):
        raise RulesError(f"{where}: expected a mapping (name: ..., ...)")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RulesError(f"{where}: name: required, a non-empty string")
    return name


_FIELDS: dict[str, set[str]] = {
    "frameworks": {"name", "python", "npm"},
    "mcp_servers": {"name", "python", "npm", "exe", "launchers", "args"},
    "models": {"name", "extensions", "dirs", "names", "not_in"},
    "endpoints": {"name", "kind", "hosts", "cidrs", "ports"},
    "executables": {"name", "kind", "exe"},
}


class _Item:
    """Field access for one rule with errors that name the rule and the field."""

    def __init__(self, section: str, raw: dict[str, Any]) -> None:
        self.raw = dict(raw)
        self.where = f"{self.raw.pop('__where__')} ({raw['name']})"
        self.name: str = raw["name"]
        unknown = sorted(set(self.raw) - _FIELDS[section])
        if unknown:
            self.fail(unknown[0], f"unknown field (known: {', '.join(sorted(_FIELDS[section]))})")

    def fail(self, key: str, message: str) -> None:
        raise RulesError(f"{self.where}: {key}: {message}")

    def strings(
        self, key: str, check: Callable[[str], str | None] | None = None
    ) -> tuple[str, ...]:
        value = self.raw.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(key, "expected a list of non-empty strings")
        for v in value:
            problem = check(v) if check else None
            if problem:
                self.fail(key, f"{v!r}: {problem}")
        return tuple(value)

    def choice(self, key: str, choices: Sequence[str]) -> str:
        value = self.raw.get(key)
        if value not in choices:
            self.fail(key, f"expected one of {', '.join(choices)}, got {value!r}")
        return str(value)

    def need_one(self, *keys: str) -> None:
        if not any(self.raw.get(k) for k in keys):
            raise RulesError(f"{self.where}: give at least one of {', '.join(keys)}")


def _python_pattern(p: str) -> str | None:
    if p.startswith("/") or p.endswith("/") or "//" in p:
        return "components are separated by single '/', without a leading or trailing '/'"
    return None


def _extension(e: str) -> str | None:
    return None if re.fullmatch(r"\.[A-Za-z0-9_.-]+", e) else "expected '.ext', e.g. '.gguf'"


def _hostname(h: str) -> str | None:
    return None if _HOSTNAME.match(h) else "not a host name (no wildcards; e.g. api.openai.com)"


def _cidr(c: str) -> str | None:
    try:
        ipaddress.ip_network(c, strict=False)
    except ValueError:
        return "not an address or CIDR (e.g. 10.0.0.0/8, fd00::/8)"
    return None


def _package_rule(it: _Item, category: str) -> PackageRule | None:
    python = it.strings("python", _python_pattern)
    npm = it.strings("npm")
    if not (python or npm):
        return None
    patterns = sorted((tuple(p.split("/")) for p in python), key=len, reverse=True)
    return PackageRule(it.name, category, tuple(patterns), npm)


def _ports(it: _Item) -> tuple[int, ...]:
    value = it.raw.get("ports")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
        isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535 for p in value
    ):
        it.fail("ports", "expected a list of port numbers 1-65535")
    return tuple(value)


def _build(merged: dict[str, list[tuple[str, dict[str, Any]]]], files: tuple[str, ...]) -> Rules:
    packages: list[PackageRule] = []
    mcp_exec: list[McpExecRule] = []
    for _, raw in merged["frameworks"]:
        it = _Item("frameworks", raw)
        it.need_one("python", "npm")
        rule = _package_rule(it, "framework")
        assert rule is not None
        packages.append(rule)
    for _, raw in merged["mcp_servers"]:
        it = _Item("mcp_servers", raw)
        it.need_one("python", "npm", "exe", "args")
        rule = _package_rule(it, "mcp-server")
        launchers, args = it.strings("launchers"), it.strings("args")
        if bool(launchers) != bool(args):
            it.fail("args" if launchers else "launchers", "launchers and args go together")
        mcp_exec.append(McpExecRule(it.name, it.strings("exe"), launchers, args))
        if rule is not None:
            packages.append(rule)
    models = []
    for _, raw in merged["models"]:
        it = _Item("models", raw)
        exts = it.strings("extensions", _extension)
        if not exts:
            it.fail("extensions", "required, e.g. ['.gguf']")
        models.append(
            ModelRule(
                it.name,
                tuple(e.lower() for e in exts),
                tuple(d.lower() for d in it.strings("dirs")),
                tuple(n.lower() for n in it.strings("names")),
                tuple(n.lower() for n in it.strings("not_in")),
            )
        )
    endpoints = []
    for _, raw in merged["endpoints"]:
        it = _Item("endpoints", raw)
        kind = it.choice("kind", ENDPOINT_KINDS)
        it.need_one("hosts", "cidrs", "ports")
        hosts = tuple(h.lower().rstrip(".") for h in it.strings("hosts", _hostname))
        cidrs = tuple(ipaddress.ip_network(c, strict=False) for c in it.strings("cidrs", _cidr))
        endpoints.append(EndpointRule(it.name, kind, hosts, cidrs, _ports(it)))
    executables = []
    for _, raw in merged["executables"]:
        it = _Item("executables", raw)
        kind = it.choice("kind", EXECUTABLE_KINDS)
        exe = it.strings("exe")
        if not exe:
            it.fail("exe", "required: globs on the executable's base name, e.g. ['bash']")
        executables.append(ExecutableRule(it.name, kind, exe))
    # Packages: user rules first (merge order), then longer patterns win within the same order.
    return Rules(
        tuple(packages), tuple(mcp_exec), tuple(models), tuple(endpoints), tuple(executables), files
    )
