"""The AI-BOM rule engine: the built-in rule file, classification of paths, execs and
endpoints, and rule-file validation errors that name the file, the rule and the field."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.aibom import rulefile
from corral.aibom import rules as aibom
from corral.aibom.rulefile import load_rules, parse_rules
from corral.aibom.rules import RulesError

REPO = Path(__file__).resolve().parents[2]
SP = "/app/.venv/lib/python3.11/site-packages"
DP = "/usr/lib/python3/dist-packages"
NM = "/srv/app/node_modules"


@pytest.fixture(scope="module")
def rules() -> aibom.Rules:
    return load_rules()


def test_builtin_rules_are_config_aibom_yaml() -> None:
    assert rulefile.default_rules_path() == REPO / "config" / "aibom.yaml"
    packaged = REPO / "daemon" / "corral" / "rules" / "aibom.yaml"
    if packaged.exists():  # made by `make bpf` for installed packages
        assert packaged.read_bytes() == (REPO / "config" / "aibom.yaml").read_bytes()


def test_builtin_rules_cover_the_required_frameworks(rules: aibom.Rules) -> None:
    names = {r.name for r in rules.packages}
    required = {"langchain", "langgraph", "crewai", "autogen", "llama_index", "openai",
                "anthropic", "google-genai", "litellm", "mcp", "transformers", "torch", "vllm",
                "sentence_transformers"}  # fmt: skip
    assert required <= names


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (f"{SP}/openai/__init__.py", ("pypi", SP, "openai", "openai")),
        (f"{SP}/openai/", ("pypi", SP, "openai", "openai")),  # a collapsed prefix
        (f"{SP}/langchain/chains/base.py", ("pypi", SP, "langchain", "langchain")),
        (f"{SP}/langchain_core/runnables/base.py", ("pypi", SP, "langchain_core", "langchain")),
        (f"{SP}/langgraph/graph.py", ("pypi", SP, "langgraph", "langgraph")),
        (f"{SP}/google/genai/client.py", ("pypi", SP, "google/genai", "google-genai")),
        (f"{SP}/llama_index/core/base.py", ("pypi", SP, "llama_index/core", "llama_index")),
        (f"{DP}/torch/__init__.py", ("pypi", DP, "torch", "torch")),
        (f"{SP}/sentence_transformers/x.py",
         ("pypi", SP, "sentence_transformers", "sentence_transformers")),
        (f"{SP}/vllm/_C.abi3.so", ("pypi", SP, "vllm", "vllm")),
        (f"{SP}/litellm/main.py", ("pypi", SP, "litellm", "litellm")),
        (f"{SP}/mcp/server/fastmcp/server.py", ("pypi", SP, "mcp", "mcp")),
        (f"{SP}/mcp_server_fetch/server.py",
         ("pypi", SP, "mcp_server_fetch", "mcp-server")),
        (f"{NM}/openai/index.js", ("npm", NM, "openai", "openai")),
        (f"{NM}/@langchain/core/dist/index.js", ("npm", NM, "@langchain/core", "langchain")),
        # the first matching rule wins: langgraph is listed before langchain's @langchain/*
        (f"{NM}/@langchain/langgraph/dist/x.js",
         ("npm", NM, "@langchain/langgraph", "langgraph")),
        (f"{NM}/@anthropic-ai/sdk/index.js", ("npm", NM, "@anthropic-ai/sdk", "anthropic")),
        (f"{NM}/@modelcontextprotocol/server-github/dist/index.js",
         ("npm", NM, "@modelcontextprotocol/server-github", "mcp-server")),
        (f"{NM}/@modelcontextprotocol/sdk/dist/esm/client/index.js",
         ("npm", NM, "@modelcontextprotocol/sdk", "mcp")),
        # the last node_modules counts
        (f"{NM}/x/node_modules/openai/a.js", ("npm", f"{NM}/x/node_modules", "openai", "openai")),
    ],
)  # fmt: skip
def test_packages(rules: aibom.Rules, path: str, expected: tuple[str, str, str, str]) -> None:
    hit = rules.classify_package(path)
    assert hit is not None
    assert (hit.ecosystem, hit.packages_dir, hit.module, hit.framework) == expected


# What the SDKs of the 2026-07-28 (stateless) MCP specification opened, from strace of real
# runs (a client and a server over stdio, `server/discover` and `_meta` on the wire, no
# `initialize`): the Python SDK mcp 2.3.0 and the TypeScript SDK v2 2.4.0, which replaced v1's
# single @modelcontextprotocol/sdk with client, server and core packages.
STATELESS_SDK_OPENS = [
    (f"{SP}/mcp/client/client.py", "mcp"),
    (f"{SP}/mcp/server/mcpserver/server.py", "mcp"),
    (f"{SP}/mcp_types/_types.py", "mcp_types"),
    (f"{NM}/@modelcontextprotocol/client/dist/index.mjs", "@modelcontextprotocol/client"),
    (f"{NM}/@modelcontextprotocol/client/dist/stdio.mjs", "@modelcontextprotocol/client"),
    (f"{NM}/@modelcontextprotocol/server/dist/index.mjs", "@modelcontextprotocol/server"),
    (f"{NM}/@modelcontextprotocol/server/package.json", "@modelcontextprotocol/server"),
    (f"{NM}/@modelcontextprotocol/core/dist/index.mjs", "@modelcontextprotocol/core"),
]


@pytest.mark.parametrize(("path", "module"), STATELESS_SDK_OPENS)
def test_sdks_of_the_stateless_spec_are_the_mcp_framework(
    rules: aibom.Rules, path: str, module: str
) -> None:
    """An MCP client or server on the 2026-07-28 spec is recognised by the SDK it loads, as
    before: nothing here reads the protocol's messages (no handshake, no session id)."""
    hit = rules.classify_package(path)
    assert hit is not None
    assert (hit.module, hit.framework, hit.category) == (module, "mcp", "framework")


def test_the_v2_server_sdk_is_not_an_mcp_server_named_after_it(rules: aibom.Rules) -> None:
    """@modelcontextprotocol/server is the SDK servers are built with; server-* beside it are
    servers."""
    sdk = rules.classify_package(f"{NM}/@modelcontextprotocol/server/dist/index.mjs")
    server = rules.classify_package(f"{NM}/@modelcontextprotocol/server-memory/dist/index.js")
    assert sdk is not None and sdk.category == "framework"
    assert server is not None and server.category == "mcp-server"
    hint = rules.classify_package(f"{SP}/mcp_types-2.3.0.dist-info/METADATA")
    assert hint is not None and (hint.framework, hint.version_hint) == ("mcp", "2.3.0")


@pytest.mark.parametrize(
    "path",
    [
        f"{SP}/requests/__init__.py",
        f"{SP}/six.py",
        f"{SP}/llama_index",  # the namespace directory alone names no package
        f"{SP}/",
        f"{NM}/@langchain/",
        f"{NM}/.bin/tsc",
        "/app/openai/client.py",  # not installed: a source tree
        "/usr/lib/python3.11/json/__init__.py",
    ],
)
def test_not_packages(rules: aibom.Rules, path: str) -> None:
    hit = rules.classify_package(path)
    assert hit is None or not hit.module


def test_dist_info_gives_a_version_hint(rules: aibom.Rules) -> None:
    hit = rules.classify_package(f"{SP}/openai-1.2.3.dist-info/METADATA")
    assert hit is not None and hit.module == ""
    assert (hit.dist, hit.version_hint, hit.framework) == ("openai", "1.2.3", "openai")
    hit = rules.classify_package(f"{SP}/langchain_core-0.3.15.dist-info/RECORD")
    assert hit is not None and (hit.dist, hit.version_hint) == ("langchain_core", "0.3.15")
    assert hit.framework == "langchain"
    assert aibom.dist_info_version("foo-1.0-py3.11.egg-info") == ("foo", "1.0")
    assert aibom.dist_info_version("foo.dist-info") is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/models/llama-3-8b.Q4_K_M.gguf", ("gguf", "llama-3-8b.Q4_K_M.gguf", None)),
        ("/data/m/model.SAFETENSORS", ("safetensors", "model.SAFETENSORS", None)),
        ("/opt/w/resnet.onnx", ("onnx", "resnet.onnx", None)),
        ("/ckpt/epoch3.pt", ("pytorch", "epoch3.pt", None)),
        ("/root/.cache/huggingface/hub/models--BAAI--bge-small/snapshots/abc123/"
         "pytorch_model.bin", ("pytorch-bin", "BAAI/bge-small", "abc123")),
        ("/srv/models/q.bin", ("pytorch-bin", "q.bin", None)),
        ("/srv/x/adapter_model.bin", ("pytorch-bin", "adapter_model.bin", None)),
    ],
)  # fmt: skip
def test_models(rules: aibom.Rules, path: str, expected: tuple[str, str, str | None]) -> None:
    hit = rules.classify_model(path)
    assert hit is not None and (hit.format, hit.name, hit.revision) == expected


@pytest.mark.parametrize(
    "path",
    [
        "/usr/lib/x86_64-linux-gnu/libfoo.bin",  # .bin outside a model directory
        f"{SP}/distutils-precedence.pth",  # path configuration, not PyTorch weights
        "/etc/hosts",
        "/tmp/.gguf",
    ],
)
def test_not_models(rules: aibom.Rules, path: str) -> None:
    assert rules.classify_model(path) is None


def _hits(rules: aibom.Rules, exe: str, argv: list[str] | None = None) -> set[tuple[Any, ...]]:
    return {(h.category, h.name, h.version) for h in rules.classify_exec(exe, argv)}


def test_shells_interpreters_tools(rules: aibom.Rules) -> None:
    assert _hits(rules, "/bin/bash") == {("shell", "bash", None)}
    assert _hits(rules, "/usr/bin/python3.11") == {("interpreter", "python3.11", None)}
    assert _hits(rules, "/usr/local/bin/node") == {("interpreter", "node", None)}
    assert _hits(rules, "/usr/bin/curl") == {("tool", "curl", None)}
    assert _hits(rules, "/usr/bin/ls") == set()


def test_mcp_servers_by_name_and_by_launcher(rules: aibom.Rules) -> None:
    assert _hits(rules, "/opt/bin/mcp-server-git") == {("mcp-server", "mcp-server-git", None)}
    npx = ["npx", "-y", "@modelcontextprotocol/server-github@2025.4.8"]
    assert ("mcp-server", "@modelcontextprotocol/server-github", "2025.4.8") in _hits(
        rules, "/usr/bin/npx", npx
    )
    uvx = ["uvx", "mcp-server-fetch==1.2"]
    assert ("mcp-server", "mcp-server-fetch", "1.2") in _hits(rules, "/usr/bin/uvx", uvx)
    py = ["python3", "-m", "mcp_server_time"]
    assert ("mcp-server", "mcp_server_time", None) in _hits(rules, "/usr/bin/python3", py)
    docker = ["docker", "run", "-i", "--rm", "mcp/github"]
    assert ("mcp-server", "mcp/github", None) in _hits(rules, "/usr/bin/docker", docker)
    # a script run by its interpreter: the kernel's argv is [interpreter, script, args...]
    script = ["/bin/sh", "/opt/bin/npx", "@modelcontextprotocol/server-everything"]
    hit = next(h for h in rules.classify_exec("/opt/bin/npx", script) if h.category == "mcp-server")
    assert hit.launcher == "npx" and hit.exe == "/opt/bin/npx"


NPX_CACHE = "/root/.npm/_npx/9f1c2a7be03d4e51/node_modules"


def test_every_launch_of_an_npx_server_is_seen(rules: aibom.Rules) -> None:
    """npx -y @modelcontextprotocol/server-filesystem /data -> sh -c "mcp-server-filesystem
    /data" -> node .../node_modules/.bin/mcp-server-filesystem /data: each exec is an MCP
    server launch with its command line; the script's path is kept to find its package."""
    npx = ["node", "/usr/bin/npx", "-y", "@modelcontextprotocol/server-filesystem", "/data"]
    hit = next(h for h in rules.classify_exec("/usr/bin/npx", npx) if h.category == "mcp-server")
    assert (hit.name, hit.launcher, hit.command, hit.script) == (
        "@modelcontextprotocol/server-filesystem", "npx", tuple(npx), "")  # fmt: skip
    sh = ["sh", "-c", "mcp-server-filesystem /data"]  # the -c script: by its first word
    hit = next(h for h in rules.classify_exec("/usr/bin/sh", sh) if h.category == "mcp-server")
    assert (hit.name, hit.launcher, hit.command) == ("mcp-server-filesystem", "sh", tuple(sh))
    script = f"{NPX_CACHE}/.bin/mcp-server-filesystem"
    node = ["node", script, "/data"]
    hit = next(h for h in rules.classify_exec("/usr/bin/node", node) if h.category == "mcp-server")
    assert (hit.name, hit.version, hit.script) == ("mcp-server-filesystem", None, script)
    # the script itself: an MCP server by its name, with its command line once read
    (hit,) = rules.classify_exec(script, node)
    assert (hit.name, hit.exe, hit.script, hit.command) == (
        "mcp-server-filesystem", script, script, tuple(node))  # fmt: skip
    assert rules.classify_exec(script)[0].command == ()
    assert rules.wants_argv(script) and rules.wants_argv("/usr/bin/sh")
    assert not rules.wants_argv("/usr/bin/grep")
    # a path holding "@" is not split into a package and a version
    scoped = f"{NPX_CACHE}/@modelcontextprotocol/server-filesystem/dist/mcp-server-x.js"
    hit = next(h for h in rules.classify_exec("/usr/bin/node", ["node", scoped])
               if h.category == "mcp-server")  # fmt: skip
    assert (hit.name, hit.version, hit.script) == ("mcp-server-x.js", None, scoped)


def test_a_shell_launches_only_what_its_script_runs_first(rules: aibom.Rules) -> None:
    assert _hits(rules, "/bin/sh", ["sh", "-c", "grep mcp-server-x notes"]) == {
        ("shell", "sh", None)
    }


def test_mcp_launcher_needs_a_launcher(rules: aibom.Rules) -> None:
    assert _hits(rules, "/usr/bin/grep", ["grep", "mcp-server-x", "f"]) == set()
    assert rules.is_launcher("/usr/bin/npx") and not rules.is_launcher("/usr/bin/grep")


def test_argv_secrets_are_redacted() -> None:
    argv = ["npx", "@x/mcp-server-y", "--api-key", "sk-1", "--token=abc", "GITHUB_TOKEN=ghp",
            "--verbose", "plain"]  # fmt: skip
    assert aibom.redact(argv) == ("npx", "@x/mcp-server-y", "--api-key", "***", "--token=***",
                                  "GITHUB_TOKEN=***", "--verbose", "plain")  # fmt: skip


def test_endpoints(rules: aibom.Rules) -> None:
    net = ipaddress.ip_network
    openai = rules.classify_endpoint(net("104.18.7.192"), 443, ["api.openai.com"])
    assert openai is not None and (openai.name, openai.kind) == ("openai", "llm")
    ollama = rules.classify_endpoint(net("127.0.0.1"), 11434)
    assert ollama is not None and ollama.name == "ollama"
    assert rules.classify_endpoint(net("104.18.7.192"), 443) is None  # name unknown
    assert "api.anthropic.com" in rules.hostnames


def test_endpoint_cidrs_and_ports() -> None:
    r = parse_rules({"version": 1, "endpoints": [
        {"name": "gw", "kind": "llm", "cidrs": ["10.8.0.0/16"], "ports": [8000]},
    ]})  # fmt: skip
    net = ipaddress.ip_network
    assert r.classify_endpoint(net("10.8.3.4"), 8000) is not None
    assert r.classify_endpoint(net("10.8.3.0/24"), 8000) is not None  # an aggregated entry
    assert r.classify_endpoint(net("10.8.3.4"), 8001) is None
    assert r.classify_endpoint(net("10.9.0.1"), 8000) is None
    assert r.classify_endpoint(net("::1"), 8000) is None


def test_user_rules_come_first_and_replace_by_name(tmp_path: Path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"version": 1, "frameworks": [
        {"name": "in-house", "python": ["acme_agents"]},
        {"name": "openai", "python": ["openai", "openai_agents"]},
    ], "endpoints": [{"name": "ollama", "kind": "llm", "ports": [11435]}]}))  # fmt: skip
    r = load_rules([mine])
    assert r.files == (str(mine), str(rulefile.default_rules_path()))
    hit = r.classify_package(f"{SP}/acme_agents/core.py")
    assert hit is not None and hit.framework == "in-house"
    hit = r.classify_package(f"{SP}/openai_agents/run.py")
    assert hit is not None and hit.framework == "openai"
    assert [e.ports for e in r.endpoints if e.name == "ollama"] == [(11435,)]
    assert sum(1 for p in r.packages if p.name == "openai") == 1


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], r"expected a mapping with version: 1"),
        ({"version": 2}, r"version: expected 1, got 2"),
        ({"version": 1, "framework": []}, r"framework: unknown section"),
        ({"version": 1, "frameworks": {}}, r"frameworks: expected a list of rules"),
        ({"version": 1, "frameworks": [{"python": ["x"]}]},
         r"frameworks\[0\]: name: required"),
        ({"version": 1, "frameworks": [{"name": "a", "python": ["a"]},
                                       {"name": "a", "python": ["b"]}]},
         r"frameworks\[1\] \(a\): duplicate rule name"),
        ({"version": 1, "frameworks": [{"name": "a"}]},
         r"frameworks\[0\] \(a\): give at least one of python, npm"),
        ({"version": 1, "frameworks": [{"name": "a", "pyhton": ["a"]}]},
         r"frameworks\[0\] \(a\): pyhton: unknown field"),
        ({"version": 1, "frameworks": [{"name": "a", "python": "openai"}]},
         r"frameworks\[0\] \(a\): python: expected a list of non-empty strings"),
        ({"version": 1, "frameworks": [{"name": "a", "python": ["/openai"]}]},
         r"python: '/openai': components are separated"),
        ({"version": 1, "models": [{"name": "m", "extensions": ["gguf"]}]},
         r"models\[0\] \(m\): extensions: 'gguf': expected '.ext'"),
        ({"version": 1, "models": [{"name": "m"}]}, r"models\[0\] \(m\): extensions: required"),
        ({"version": 1, "endpoints": [{"name": "e", "kind": "llm"}]},
         r"endpoints\[0\] \(e\): give at least one of hosts, cidrs, ports"),
        ({"version": 1, "endpoints": [{"name": "e", "kind": "api", "ports": [1]}]},
         r"endpoints\[0\] \(e\): kind: expected one of llm, tool"),
        ({"version": 1, "endpoints": [{"name": "e", "kind": "llm", "ports": [0]}]},
         r"ports: expected a list of port numbers 1-65535"),
        ({"version": 1, "endpoints": [{"name": "e", "kind": "llm", "hosts": ["*.openai.com"]}]},
         r"hosts: '\*.openai.com': not a host name \(no wildcards"),
        ({"version": 1, "endpoints": [{"name": "e", "kind": "llm", "cidrs": ["10.0.0.0/33"]}]},
         r"cidrs: '10.0.0.0/33': not an address or CIDR"),
        ({"version": 1, "mcp_servers": [{"name": "s", "launchers": ["npx"]}]},
         r"mcp_servers\[0\] \(s\): give at least one of python, npm, exe, args"),
        ({"version": 1, "mcp_servers": [{"name": "s", "launchers": ["npx"], "exe": ["x"]}]},
         r"mcp_servers\[0\] \(s\): args: launchers and args go together"),
        ({"version": 1, "executables": [{"name": "x", "kind": "shell"}]},
         r"executables\[0\] \(x\): exe: required"),
        ({"version": 1, "executables": [{"name": "x", "kind": "daemon", "exe": ["x"]}]},
         r"executables\[0\] \(x\): kind: expected one of shell, interpreter, tool"),
    ],
)  # fmt: skip
def test_validation_errors(doc: Any, message: str) -> None:
    with pytest.raises(RulesError, match=message):
        parse_rules(doc, "my.yaml")


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "local.yaml"
    bad.write_text("version: 1\nendpoints:\n  - {name: gw, kind: llm, ports: [99999]}\n")
    with pytest.raises(RulesError, match=rf"{bad}: endpoints\[0\] \(gw\): ports"):
        load_rules([bad])
    bad.write_text("version: 1\nframeworks: [unclosed\n")
    with pytest.raises(RulesError, match=rf"{bad}: not valid YAML"):
        load_rules([bad])
    with pytest.raises(RulesError, match="no such AI-BOM rule file"):
        load_rules([tmp_path / "missing.yaml"])


def test_rules_errors_are_config_errors() -> None:
    from corral.config import ConfigError

    assert issubclass(RulesError, ConfigError)


def _without_exe_prefilter() -> aibom.Rules:
    import re

    ref = parse_rules(yaml.safe_load((REPO / "config" / "aibom.yaml").read_text()), "ref")
    object.__setattr__(ref, "_exe_prefilter", re.compile(""))  # every name takes the slow path
    return ref


@pytest.mark.parametrize("argv", [None, ["npx", "-y", "@modelcontextprotocol/server-fs"]])
def test_exec_prefilter_changes_no_answer(rules: aibom.Rules, argv: list[str] | None) -> None:
    """The one-regex prefilter of classify_exec answers exactly as the glob loops."""
    ref = _without_exe_prefilter()
    globs = [g for r in (*rules.executables, *rules.mcp_exec) for g in r.exe]
    names = {g.replace("*", "x").replace("?", "y").replace("[", "").replace("]", "") for g in globs}
    names |= {"python3.11", "bash", "sh", "node", "npx", "uvx", "tool-0001", "", "mcp", "x*y"}
    for name in sorted(names):
        for exe in (f"/usr/bin/{name}", name):
            assert rules.classify_exec(exe, argv) == ref.classify_exec(exe, argv), exe


@settings(deadline=None)  # a property, not a timing (a loaded CI machine ran past 200 ms)
@given(
    st.lists(
        st.sampled_from(
            ["a", "B", "/", ".", "site-packages", "Dist-Packages", "node_modules"]
            + [e.upper() for e in (".gguf", ".pt")]
            + [".safetensors", "x.pth"]
        ),
        max_size=8,
    ).map("".join)
)
def test_prefilter_is_the_case_blind_package_dir_or_model_extension_test(path: str) -> None:
    """maybe_interesting (string methods, on every open event) says what this regex says."""
    rules = load_rules([])
    exts = sorted({e for r in rules.models for e in r.extensions})
    dirs = "|".join(map(re.escape, (*aibom.PYTHON_DIRS, aibom.NPM_DIR)))
    ref = re.compile(rf"/({dirs})/|" + "|".join(re.escape(e) + r"\Z" for e in exts), re.I)
    assert rules.maybe_interesting(path) == (ref.search(path) is not None)


PATH_PARTS = ["a", "B", "/", ".", "\n", "site-packages", "Dist-Packages", "node_modules"]
PATH_PARTS += [".GGUF", ".pt", ".safetensors", "x.pth", ".bin"]


@settings(deadline=None)  # a property, not a timing: a loaded CI machine took 258 ms once
@given(
    st.lists(
        st.lists(
            st.sampled_from(PATH_PARTS),
            max_size=8,
        ).map("".join),
        max_size=12,
    )
)
def test_batch_prefilter_never_misses_what_the_per_path_one_takes(paths: list[str]) -> None:
    """any_maybe_interesting (corrald asks it once per ring-buffer batch of open paths) is True
    whenever maybe_interesting is for one of them, and exact when no path has a newline."""
    rules = load_rules([])
    one_by_one = any(rules.maybe_interesting(p) for p in paths)
    together = rules.any_maybe_interesting(paths)
    if one_by_one:
        assert together
    if not any("\n" in p for p in paths):
        assert together == one_by_one
