"""A Claude-style agent with an MCP server: the official MCP Python SDK (`mcp`) launches the
official npm filesystem server (`@modelcontextprotocol/server-filesystem`) through `npx` over
stdio, lists its tools and offers them to the model next to its own built-in ones through the
Anthropic Python SDK (`anthropic`); all packages unmodified, from PyPI and npm.

The server is configured as MCP clients configure it (command, args, env): `npx --no-install
@modelcontextprotocol/server-filesystem WORKSPACE`, run in MCP_SERVERS_DIR (the npm project
that holds the pinned server) with npm kept offline. Its MCP tools are offered as
`fs__<tool>`, the way clients name a server's tools. Every run names its files anew: npm's own
debug log (~/.npm/_logs/<time>-debug-0.log), the server's stderr and the agent's log
(named by time), and the session record (~/.local/state/mcp-filesystem/sessions/<uuid>.json).

Environment: ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY (read by the SDK itself),
ANTHROPIC_MODEL, AGENT_WORKSPACE, MCP_SERVERS_DIR. Usage: mcp_filesystem.py TASK
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path
from typing import Any

import anthropic
from anthropic.types import ToolParam
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from toolbox import TOOL_SPECS, Toolbox, ToolResult, emit, open_log, task_from_argv, workspace

AGENT = "mcp-filesystem"
PREFIX = "fs__"
MAX_TURNS = 6
SERVER_PACKAGE = "@modelcontextprotocol/server-filesystem"


def server_parameters(root: Path) -> StdioServerParameters:
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    env.update(npm_config_offline="true", npm_config_update_notifier="false")
    return StdioServerParameters(
        command="npx",
        args=["--no-install", SERVER_PACKAGE, str(root)],
        cwd=os.environ["MCP_SERVERS_DIR"],
        env=env,
    )


def anthropic_tools(mcp_tools: list[Any]) -> list[ToolParam]:
    tools: list[ToolParam] = [
        {
            "name": PREFIX + t.name,
            "description": t.description or "",
            "input_schema": t.input_schema,
        }
        for t in mcp_tools
    ]
    tools += [{"name": n, "description": d, "input_schema": s} for n, (d, s) in TOOL_SPECS.items()]
    return tools


async def call_mcp(session: ClientSession, name: str, arguments: dict[str, Any]) -> ToolResult:
    result = await session.call_tool(name, arguments)
    text = "".join(getattr(c, "text", "") for c in getattr(result, "content", []))
    outcome = "error" if getattr(result, "is_error", False) else "ok"
    detail = f"{len(text)} characters from the MCP server"
    emit("tool", tool=PREFIX + name, outcome=outcome, detail=detail)
    return ToolResult(outcome, detail, text)


async def answer_tools(
    session: ClientSession, tools: Toolbox, blocks: list[Any]
) -> list[dict[str, Any]]:
    results = []
    for block in blocks:
        if block.type != "tool_use":
            continue
        if block.name.startswith(PREFIX):
            result = await call_mcp(session, block.name[len(PREFIX) :], dict(block.input))
        else:
            result = tools.call(block.name, dict(block.input))
        results.append(
            {
                "type": "tool_result",
                "tool_use_id": block.id,
                "content": result.content,
                "is_error": result.outcome != "ok",
            }
        )
    return results


async def converse(session: ClientSession, task: str, tools: Toolbox) -> list[Any]:
    listed = await session.list_tools()
    client = anthropic.AsyncAnthropic(timeout=30.0)
    model = os.environ.get("ANTHROPIC_MODEL", "claude-sonnet-4-5")
    messages: list[Any] = [{"role": "user", "content": task}]
    for _ in range(MAX_TURNS):
        reply = await client.messages.create(
            model=model,
            max_tokens=1024,
            system="You triage support tickets. The workspace is served by the fs__ tools.",
            messages=messages,
            tools=anthropic_tools(listed.tools),
        )
        messages.append({"role": "assistant", "content": [b.model_dump() for b in reply.content]})
        if reply.stop_reason != "tool_use":
            break
        messages.append(
            {"role": "user", "content": await answer_tools(session, tools, reply.content)}
        )
    return messages


async def run(task: str) -> str:
    log, log_path = open_log(AGENT)
    log.info("task: %s", task)
    root = workspace()
    with open(log_path.with_suffix(".server.log"), "w") as server_log:
        async with (
            stdio_client(server_parameters(root), errlog=server_log) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            messages = await converse(session, task, Toolbox(root, log))
    sessions = Path.home() / ".local" / "state" / AGENT / "sessions"
    sessions.mkdir(parents=True, exist_ok=True)
    (sessions / f"{uuid.uuid4()}.json").write_text(json.dumps(messages, default=str))
    last = messages[-1]["content"]
    answer = "".join(b.get("text", "") for b in last) if isinstance(last, list) else str(last)
    log.info("answer: %s", answer)
    return answer


def main() -> int:
    task = task_from_argv(AGENT)
    emit("final", text=asyncio.run(run(task)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
