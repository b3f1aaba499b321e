"""A fake-but-real AI agent for the AI-BOM: real imports, a real model file, a real connect, real
execs; only the packages are tiny stand-ins. Used by tests/daemon/test_aibom_e2e.py, and by hand:

    python3 tests/daemon/fake_ai_agent.py build /tmp/fake-agent
    corralctl run --agent demo-ai -- python3 tests/daemon/fake_ai_agent.py run /tmp/fake-agent PORT
    corralctl aibom

`build DIR` makes DIR/venv/lib/pythonX.Y/site-packages with langchain/ (0.3.7), openai/ (1.2.3)
and their dist-info/METADATA, DIR/models/tiny-llama.Q4_K_M.gguf, and DIR/bin/ with an
`mcp-server-demo` script and a stand-in `npx`. Build it outside the agent: creating those
files from inside would itself be seen as opening them.

`run DIR PORT [--hold FILE]` imports langchain and openai from that site-packages, asks
importlib.metadata for openai's version, reads the model, connects to 127.0.0.1:PORT ("the
LLM"), runs `mcp-server-demo`, `npx -y @modelcontextprotocol/server-everything@2.0.1` and
`sh -c 'exit 0'`, then with --hold waits (up to 60 s) until FILE exists, so the daemon can
read versions through /proc/<pid>/root while it runs.

`build-npx DIR` (build_npx) makes what `npx -y @modelcontextprotocol/server-filesystem
/data` leaves and runs, with real node and no network: DIR/bin/npx (a node script that, like
npm's run-script, runs `sh -c "mcp-server-filesystem /data"` with the package's
node_modules/.bin first on PATH) and DIR/.npm/_npx/<hash>/node_modules/ holding the package
(package.json with its version, dist/index.js: a node script that runs until $FAKE_MCP_HOLD
exists, up to 60 s) and the .bin/mcp-server-filesystem symlink to it. Run it as
`corralctl run --agent mcp-fs -- DIR/bin/npx -y @modelcontextprotocol/server-filesystem /data`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = {"langchain": "0.3.7", "openai": "1.2.3"}
MODEL = "tiny-llama.Q4_K_M.gguf"
NPX_PACKAGE = "@modelcontextprotocol/server-everything"
MCP_FS_PACKAGE = "@modelcontextprotocol/server-filesystem"
MCP_FS_VERSION = "2025.8.21"
MCP_FS_BIN = "mcp-server-filesystem"
NPX_HASH = "9f1c2a7be03d4e51"

NPX_JS = """#!/usr/bin/env node
// a stand-in npx: runs the package's bin through `sh -c`, as npm's run-script does
const { spawnSync } = require("child_process");
const path = require("path");
const cache = path.join(__dirname, "..", ".npm", "_npx", "%(hash)s", "node_modules");
const rest = process.argv.slice(2).filter((a) => !a.startsWith("-")).slice(1);
const env = { ...process.env, PATH: path.join(cache, ".bin") + ":" + process.env.PATH };
const cmd = ["%(bin)s", ...rest].join(" ");
const r = spawnSync("sh", ["-c", cmd], { stdio: "inherit", env });
process.exit(r.status === null ? 1 : r.status);
"""
SERVER_JS = """#!/usr/bin/env node
// a stand-in MCP server: runs until $FAKE_MCP_HOLD exists (at most 60 s)
const fs = require("fs");
const hold = process.env.FAKE_MCP_HOLD;
const deadline = Date.now() + 60000;
const wait = () => {
  if (!hold || fs.existsSync(hold) || Date.now() > deadline) process.exit(0);
  setTimeout(wait, 50);
};
wait();
"""


def site_packages(root: Path) -> Path:
    return (
        root
        / "venv"
        / "lib"
        / f"python{sys.version_info[0]}.{sys.version_info[1]}"
        / ("site-packages")
    )


def build(root: Path) -> None:
    sp = site_packages(root)
    for name, version in PACKAGES.items():
        (sp / name).mkdir(parents=True, exist_ok=True)
        (sp / name / "__init__.py").write_text(f'__version__ = "{version}"\n')
        info = sp / f"{name}-{version}.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nA stand-in.\n"
        )
        (info / "top_level.txt").write_text(f"{name}\n")
    (root / "models").mkdir(exist_ok=True)
    (root / "models" / MODEL).write_bytes(b"GGUF" + bytes(60))
    bindir = root / "bin"
    bindir.mkdir(exist_ok=True)
    scripts = {
        "mcp-server-demo": "#!/bin/sh\nexit 0\n",
        # long enough for corrald to read its argv from /proc/<pid>/cmdline
        "npx": "#!/bin/sh\nsleep 2\n",
    }
    for name, text in scripts.items():
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)


def npx_cache(root: Path) -> Path:
    """The node_modules of the package's npx cache entry under root."""
    return root / ".npm" / "_npx" / NPX_HASH / "node_modules"


def build_npx(root: Path) -> None:
    modules = npx_cache(root)
    package = modules / MCP_FS_PACKAGE
    (package / "dist").mkdir(parents=True, exist_ok=True)
    manifest = {"name": MCP_FS_PACKAGE, "version": MCP_FS_VERSION,
                "bin": {MCP_FS_BIN: "dist/index.js"}}  # fmt: skip
    (package / "package.json").write_text(json.dumps(manifest))
    (package / "dist" / "index.js").write_text(SERVER_JS)
    (package / "dist" / "index.js").chmod(0o755)
    (modules / ".bin").mkdir(exist_ok=True)
    link = modules / ".bin" / MCP_FS_BIN
    if not link.is_symlink():
        link.symlink_to(f"../{MCP_FS_PACKAGE}/dist/index.js")
    (root / "bin").mkdir(parents=True, exist_ok=True)
    (root / "bin" / "npx").write_text(NPX_JS % {"hash": NPX_HASH, "bin": MCP_FS_BIN})
    (root / "bin" / "npx").chmod(0o755)


def run(root: Path, port: int, hold: Path | None) -> None:
    sys.path.insert(0, str(site_packages(root)))
    for name in PACKAGES:
        importlib.import_module(name)
    print("openai", importlib.metadata.version("openai"), flush=True)
    with open(root / "models" / MODEL, "rb") as f:
        f.read()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n\r\n")
    subprocess.run([str(root / "bin" / "mcp-server-demo")], check=True)
    subprocess.run([str(root / "bin" / "npx"), "-y", f"{NPX_PACKAGE}@2.0.1", "--api-key",
                    "not-a-real-key"], check=True)  # fmt: skip
    subprocess.run(["sh", "-c", "exit 0"], check=True)
    print("fake agent done", flush=True)
    deadline = time.monotonic() + 60
    while hold is not None and not hold.exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] in ("build", "build-npx"):
        (build if argv[0] == "build" else build_npx)(Path(argv[1]))
        return 0
    if len(argv) >= 3 and argv[0] == "run":
        hold = Path(argv[4]) if len(argv) >= 5 and argv[3] == "--hold" else None
        run(Path(argv[1]), int(argv[2]), hold)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main(sys.argv[1:]))
