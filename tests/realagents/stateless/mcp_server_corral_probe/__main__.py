"""`python -m mcp_server_corral_probe`: a stdio MCP server on the SDK's MCPServer. Its one tool
says what the AI-BOM would see of this process: the argv it was started with and the files
of the modules it loaded (each of them was opened)."""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("corral-probe")


@server.tool()
def seen() -> dict[str, list[str]]:
    """This process's argv and the files of its loaded modules."""
    files = sorted({f for m in list(sys.modules.values()) if (f := getattr(m, "__file__", None))})
    return {"argv": list(sys.orig_argv), "modules": files}


if __name__ == "__main__":
    server.run("stdio")
