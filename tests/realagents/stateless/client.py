"""An MCP client on the official Python SDK (mcp 2.x) with its default negotiation ("auto":
`server/discover` first, the `initialize` handshake only for a legacy server). It launches
mcp_server_corral_probe over stdio through `sh -c "tee IN | python -m ... | tee OUT"` so the
test can read the wire, calls its tool and prints one JSON line: the server's answer and the
files of this client's own modules.

Usage: client.py TAP_PREFIX (writes TAP_PREFIX.in and TAP_PREFIX.out)
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
from pathlib import Path

from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters


def server_parameters(tap: str) -> StdioServerParameters:
    server = f"{shlex.quote(sys.executable)} -m mcp_server_corral_probe"
    pipeline = f"tee {shlex.quote(tap + '.in')} | {server} | tee {shlex.quote(tap + '.out')}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(Path(__file__).parent),
    }
    return StdioServerParameters(command="sh", args=["-c", pipeline], env=env)


async def main(tap: str) -> None:
    async with Client(server_parameters(tap)) as client:
        result = await client.call_tool("seen", {})
    files = sorted({f for m in list(sys.modules.values()) if (f := getattr(m, "__file__", None))})
    print(json.dumps({"server": result.structured_content, "client_modules": files}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
