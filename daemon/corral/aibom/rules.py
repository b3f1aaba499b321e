"""AI-BOM detection rules and the pure classification of what corral sees.

The rules are data: config/aibom.yaml (the built-in set) plus the files named by the
``aibom.rule_files`` configuration option. Each file has the same shape::

    version: 1
    frameworks:   [{name, python: [pattern], npm: [pattern]}]
    mcp_servers:  [{name, python, npm, exe: [glob], launchers: [glob], args: [glob]}]
    models:       [{name, extensions: [.ext], dirs: [glob], names: [glob], not_in: [glob]}]
    endpoints:    [{name, kind, hosts: [hostname], cidrs: [cidr], ports: [port]}]
    executables:  [{name, kind, exe: [glob]}]

User files are consulted before the built-in rules (the first matching rule wins), and a user
rule with the name of a built-in rule of the same section replaces it. Errors name the file,
the rule and the field.

Classification (everything here is pure: no I/O):

* an opened path under ``site-packages/``, ``dist-packages/`` or ``node_modules/`` (the last
  such component) names a package; python patterns are "/"-separated component globs matched
  against the components after the packages directory ("langchain_*", "google/genai"), npm
  patterns are globs on the package name ("@langchain/*"). A ``<name>-<version>.dist-info``
  component gives a version hint, not a package;
* an opened path whose extension a model rule lists is a model file (with ``dirs``/``names``
  the file must also sit below a directory, or be named, like one of those globs);
* an executed path whose base name matches an executables rule is a shell/interpreter/tool,
  one matching ``mcp_servers[].exe`` an MCP server; a launcher (npx, uvx, python, sh...)
  whose argv holds an argument matching ``mcp_servers[].args`` runs that MCP server (an
  argument with spaces, such as the script of ``sh -c``, by its first word). An MCP server's
  file (the executed one, or an absolute path a launcher was given) is its ``script``: the
  tracker looks for the package.json above it to name the package it belongs to;
* a connect target is classified by the endpoint rules (resolved host names, CIDRs, ports).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase, translate

from corral.config import ConfigError

RULES_VERSION = 1
SECTIONS = ("frameworks", "mcp_servers", "models", "endpoints", "executables")
ENDPOINT_KINDS = ("llm", "tool", "model-hub", "vector-db", "mcp")
EXECUTABLE_KINDS = ("shell", "interpreter", "tool", "llm-server")
# An LLM server's process (vllm, ollama, ...): names the port-only endpoint rule of its name
LLM_SERVER = "llm-server"
# Endpoint kinds that make a workload an AI agent on their own.
AI_ENDPOINT_KINDS = frozenset({"llm"})
PYTHON_DIRS = ("site-packages", "dist-packages")
NPM_DIR = "node_modules"

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_SECRET = re.compile(r"(?i)(key|token|secret|passw|auth|credential|bearer)")
_MODULE_SUFFIX = re.compile(r"\.(py|pyc|pyi|so|pyd)$")
# Cheap pre-filter (maybe_interesting): package directories as they appear inside a path
_SITE, _DIST, _NPM = (f"/{d}/" for d in (*PYTHON_DIRS, NPM_DIR))


class RulesError(ConfigError):
    """A bad rule file; the message names the file, the rule and the field."""


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name: "Sentence_Transformers" -> "sentence-transformers"."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ---- rules --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackageRule:
    """frameworks[] and the package part of mcp_servers[]."""

    name: str
    category: str  # framework | mcp-server
    python: tuple[tuple[str, ...], ...] = ()  # component globs, longest first
    npm: tuple[str, ...] = ()

    def match_python(self, components: Sequence[str]) -> str | None:
        for pattern in self.python:
            n = len(pattern)
            if len(components) >= n and all(
                fnmatchcase(components[i], pattern[i]) for i in range(n)
            ):
                return "/".join(components[:n])
        return None

    def match_python_dist(self, dist: str) -> bool:
        """Does a distribution name (from a .dist-info directory) belong to this rule?"""
        name = canonical(dist)
        return any(fnmatchcase(name, canonical("-".join(p))) for p in self.python)

    def match_npm(self, package: str) -> bool:
        return any(fnmatchcase(package, g) for g in self.npm)


@dataclass(frozen=True)
class McpExecRule:
    name: str
    exe: tuple[str, ...] = ()
    launchers: tuple[str, ...] = ()
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelRule:
    name: str
    extensions: tuple[str, ...]
    dirs: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    not_in: tuple[str, ...] = ()


@dataclass(frozen=True)
class EndpointRule:
    name: str
    kind: str
    hosts: tuple[str, ...] = ()
    cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    ports: tuple[int, ...] = ()


@dataclass(frozen=True)
class ExecutableRule:
    name: str
    kind: str
    exe: tuple[str, ...]


@dataclass(frozen=True)
class Rules:
    packages: tuple[PackageRule, ...] = ()
    mcp_exec: tuple[McpExecRule, ...] = ()
    models: tuple[ModelRule, ...] = ()
    endpoints: tuple[EndpointRule, ...] = ()
    executables: tuple[ExecutableRule, ...] = ()
    files: tuple[str, ...] = ()
    _model_exts: frozenset[str] = field(default=frozenset(), repr=False)
    _model_suffixes: tuple[str, ...] = field(default=(), repr=False)
    _model_line_end: re.Pattern[str] = field(default=re.compile(r"(?!)"), repr=False)
    _exe_prefilter: re.Pattern[str] = field(default=re.compile(r"(?!)"), repr=False)

    def __post_init__(self) -> None:
        # one match for "does any executable or MCP exe glob match this name" (fnmatchcase is
        # re.match of fnmatch.translate): most exec'd names match none
        globs = [g for r in (*self.executables, *self.mcp_exec) for g in r.exe]
        exe_any = re.compile("|".join(map(translate, globs)) or r"(?!)")
        object.__setattr__(self, "_exe_prefilter", exe_any)
        exts = frozenset(e for r in self.models for e in r.extensions)
        object.__setattr__(self, "_model_exts", exts)
        object.__setattr__(self, "_model_suffixes", tuple(sorted(e.lower() for e in exts)))
        # a model extension at the end of a line (one search: a scan per extension costs 4x)
        ends = "|".join(re.escape(e) for e in self._model_suffixes)
        line_end = re.compile(f"(?:{ends})\n" if ends else r"(?!)")
        object.__setattr__(self, "_model_line_end", line_end)

    @property
    def hostnames(self) -> list[str]:
        """Every host name the endpoint rules list (the daemon resolves them)."""
        seen: dict[str, None] = {}
        for r in self.endpoints:
            for h in r.hosts:
                seen.setdefault(h.lower().rstrip("."), None)
        return list(seen)

    def maybe_interesting(self, path: str) -> bool:
        """Fast pre-filter for open paths: False means neither a package nor a model (no
        package directory in it, no model file extension; case ignored). String methods, not
        a regex search (twice the cost): corrald asks it for every open event."""
        low = path.lower()
        return low.endswith(self._model_suffixes) or _SITE in low or _DIST in low or _NPM in low

    def any_maybe_interesting(self, paths: list[str]) -> bool:
        """maybe_interesting for a whole batch of open paths at once: False means it is False
        for each of them (a path containing a newline can only make it answer True wrongly).
        One lowered join and a few substring scans in C instead of a call per path."""
        text = "\n".join(paths).lower() + "\n"
        if _SITE in text or _DIST in text or _NPM in text:
            return True
        return self._model_line_end.search(text) is not None

    # ---- classification ----------------------------------------------------------------------

    def classify_package(self, path: str) -> PackageHit | None:
        loc = split_package_path(path)
        if loc is None:
            return None
        eco, base, rest = loc
        if not rest:
            return None
        if eco == "pypi":
            hint = dist_info_version(rest[0])
            if hint is not None:
                name, version = hint
                rule = next((r for r in self.packages if r.match_python_dist(name)), None)
                return PackageHit(
                    "pypi",
                    base,
                    "",
                    rule.name if rule else "",
                    rule.category if rule else "",
                    dist=name,
                    version_hint=version,
                )
            components = list(rest)
            if len(rest) == 1 and not path.endswith("/") and _MODULE_SUFFIX.search(rest[0]):
                components[0] = rest[0].split(".", 1)[0]  # a one-file module: six.py, _x.so
            for rule in self.packages:
                module = rule.match_python(components)
                if module is not None:
                    return PackageHit("pypi", base, module, rule.name, rule.category)
            return None
        package = npm_package(rest)
        if package is None:
            return None
        for rule in self.packages:
            if rule.match_npm(package):
                return PackageHit("npm", base, package, rule.name, rule.category)
        return None

    def classify_model(self, path: str) -> ModelHit | None:
        base = path.rsplit("/", 1)[-1]
        lower = base.lower()
        dot = lower.rfind(".")
        if dot <= 0 or lower[dot:] not in self._model_exts:
            return None
        ext = lower[dot:]
        dirs = [d for d in path.split("/")[:-1] if d]
        for rule in self.models:
            if ext not in rule.extensions:
                continue
            if dirs and any(fnmatchcase(dirs[-1].lower(), g) for g in rule.not_in):
                continue
            if rule.dirs or rule.names:
                in_dir = any(fnmatchcase(d.lower(), g) for d in dirs for g in rule.dirs)
                named = any(fnmatchcase(lower, g) for g in rule.names)
                if not (in_dir or named):
                    continue
            name, revision = model_name(path)
            return ModelHit(path=path, format=rule.name, name=name, revision=revision)
        return None

    def classify_exec(self, exe: str, argv: Sequence[str] | None = None) -> list[ExecHit]:
        """What an executed path (and, when known, its argv) is: shells/interpreters/tools
        and MCP servers. An exec can be both (python running an MCP server)."""
        base = exe.rsplit("/", 1)[-1]
        if not self._exe_prefilter.match(base):
            launched = self._launched_mcp(base, argv)
            return [] if launched is None else [replace(launched, exe=exe)]
        hits: list[ExecHit] = []
        for rule in self.executables:
            if any(fnmatchcase(base, g) for g in rule.exe):
                hits.append(ExecHit(rule.kind, base, exe, rule=rule.name))
                break
        for mcp in self.mcp_exec:
            if any(fnmatchcase(base, g) for g in mcp.exe):
                command = redact(argv) if argv else ()
                hits.append(ExecHit("mcp-server", base, exe, mcp.name, command=command, script=exe))
                break
        else:
            launched = self._launched_mcp(base, argv)
            if launched is not None:
                hits.append(replace(launched, exe=exe))
        return hits

    def _launched_mcp(self, base: str, argv: Sequence[str] | None) -> ExecHit | None:
        if not argv:
            return None
        # the exec'd file, argv[0], and argv[1] for a script run by its interpreter
        # (the kernel rewrites a script's argv to [interpreter, script, ...])
        names = [base, *(a.rsplit("/", 1)[-1] for a in argv[:2])]
        for rule in self.mcp_exec:
            launcher = next(
                (n for n in names if any(fnmatchcase(n, g) for g in rule.launchers)), None
            )
            if not rule.args or launcher is None:
                continue
            for word in _words(argv[1:]):
                package, version = (word, None) if word.startswith("/") else split_versioned(word)
                for candidate in (package, package.rsplit("/", 1)[-1]):
                    if any(fnmatchcase(candidate, g) for g in rule.args):
                        return ExecHit(
                            "mcp-server",
                            candidate,
                            "",
                            rule=rule.name,
                            version=version,
                            command=redact(argv),
                            launcher=launcher,
                            script=word if word.startswith("/") else "",
                        )
        return None

    def is_launcher(self, exe: str) -> bool:
        """May this exec launch an MCP server (its argv says which)?"""
        base = exe.rsplit("/", 1)[-1]
        return any(fnmatchcase(base, g) for r in self.mcp_exec if r.args for g in r.launchers)

    def wants_argv(self, exe: str) -> bool:
        """Is the cmdline of this exec worth reading: a launcher, or an MCP server itself
        (its command line is evidence)?"""
        base = exe.rsplit("/", 1)[-1]
        return self.is_launcher(exe) or any(
            fnmatchcase(base, g) for r in self.mcp_exec for g in r.exe
        )

    def classify_endpoint(
        self,
        network: ipaddress.IPv4Network | ipaddress.IPv6Network,
        port: int,
        names: Iterable[str] = (),
    ) -> EndpointRule | None:
        """The first endpoint rule matching (network, port); names: host names the address
        is known to resolve from (only rules' hosts are ever resolved)."""
        known = {n.lower().rstrip(".") for n in names}
        for rule in self.endpoints:
            if rule.ports and port not in rule.ports:
                continue
            if rule.hosts or rule.cidrs:
                by_host = any(h in known for h in rule.hosts)
                by_cidr = any(
                    c.version == network.version and network.subnet_of(c)  # type: ignore[arg-type]
                    for c in rule.cidrs
                )
                if not (by_host or by_cidr):
                    continue
            return rule
        return None


@dataclass(frozen=True)
class PackageHit:
    ecosystem: str  # pypi | npm
    packages_dir: str  # .../site-packages, .../node_modules
    module: str  # "openai", "google/genai", "@langchain/core"; "" for a dist-info hint
    framework: str  # the rule's name ("" if no rule: a dist-info hint of another package)
    category: str  # framework | mcp-server
    dist: str = ""  # distribution name from a dist-info directory
    version_hint: str | None = None


@dataclass(frozen=True)
class ModelHit:
    path: str
    format: str
    name: str
    revision: str | None = None


@dataclass(frozen=True)
class ExecHit:
    category: str  # shell | interpreter | tool | mcp-server
    name: str
    exe: str
    rule: str = ""
    version: str | None = None
    command: tuple[str, ...] = ()
    launcher: str = ""
    script: str = ""  # an MCP server's own file (absolute path), when known


# ---- path helpers -------------------------------------------------------------------------------


def split_package_path(path: str) -> tuple[str, str, list[str]] | None:
    """(ecosystem, packages directory, components after it) for the LAST site-packages,
    dist-packages or node_modules component of path; None if there is none."""
    parts = path.split("/")
    for i in range(len(parts) - 1, -1, -1):
        p = parts[i]
        if p in PYTHON_DIRS or p == NPM_DIR:
            eco = "npm" if p == NPM_DIR else "pypi"
            return eco, "/".join(parts[: i + 1]), [c for c in parts[i + 1 :] if c]
    return None


def npm_package(rest: Sequence[str]) -> str | None:
    """ "@scope/name" or "name" from the components after node_modules."""
    if not rest or rest[0].startswith("."):
        return None
    if rest[0].startswith("@"):
        return f"{rest[0]}/{rest[1]}" if len(rest) > 1 else None
    return rest[0]


_DIST_INFO = re.compile(r"^(?P<name>[^-/]+)-(?P<version>[^-/]+?)(-py[^/]*)?\.(dist|egg)-info$")


def dist_info_version(component: str) -> tuple[str, str] | None:
    """("openai", "1.2.3") from "openai-1.2.3.dist-info" (or a legacy .egg-info)."""
    m = _DIST_INFO.match(component)
    return (m.group("name"), m.group("version")) if m else None


def model_name(path: str) -> tuple[str, str | None]:
    """A model's name and revision: the Hugging Face cache's "models--org--name/snapshots/REV"
    gives ("org/name", REV); otherwise the file name."""
    parts = path.split("/")
    for i, p in enumerate(parts):
        if p.startswith("models--") and len(p) > len("models--"):
            name = p[len("models--") :].replace("--", "/")
            rev = parts[i + 2] if len(parts) > i + 3 and parts[i + 1] == "snapshots" else None
            return name, rev
    return parts[-1], None


def _words(args: Sequence[str]) -> Iterable[str]:
    """The arguments that may name what a launcher runs: not options; an argument with
    spaces (the script of `sh -c`) by its first word."""
    for arg in args:
        word = arg.split(None, 1)[0] if arg.strip() else ""
        if word and not word.startswith("-"):
            yield word


def split_versioned(arg: str) -> tuple[str, str | None]:
    """ "@scope/pkg@1.2" -> ("@scope/pkg", "1.2"); "pkg==1.0" -> ("pkg", "1.0")."""
    if "==" in arg:
        name, _, ver = arg.partition("==")
        return name, ver or None
    at = arg.rfind("@")
    if at > 0:
        return arg[:at], arg[at + 1 :] or None
    return arg, None


def redact(argv: Sequence[str], limit: int = 24, max_chars: int = 512) -> tuple[str, ...]:
    """argv with values of secret-looking options and VAR=value pairs replaced by ***."""
    out: list[str] = []
    hide_next = False
    for arg in argv[:limit]:
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        name, eq, _ = arg.partition("=")
        if eq and _SECRET.search(name):
            out.append(f"{name}=***")
        elif arg.startswith("-") and _SECRET.search(arg):
            out.append(arg)
            hide_next = True
        else:
            out.append(arg[:max_chars])
    if len(argv) > limit:
        out.append(f"... ({len(argv) - limit} more)")
    return tuple(out)
