"""An ops agent on LangChain's `create_agent` (`langchain`, `langgraph`, `langchain-openai`,
unmodified, from PyPI): the tools are LangChain `@tool` functions, the loop a LangGraph graph
with a checkpointer, the model ChatOpenAI on an OpenAI-compatible chat completions endpoint.

Every run names its files anew: the conversation is kept per thread (a uuid4 thread id, as
LangGraph's checkpointers key it) under ~/.cache/langchain-ops/threads/, the tools work in a
TemporaryDirectory, and the log is named by the start time.

Environment: OPENAI_BASE_URL and OPENAI_API_KEY (read by the OpenAI SDK under ChatOpenAI),
OPENAI_MODEL, AGENT_WORKSPACE. Usage: langchain_ops.py TASK
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import messages_to_dict
from langchain_core.tools import BaseTool, tool
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from toolbox import TOOL_SPECS, Toolbox, emit, open_log, task_from_argv, workspace

AGENT = "langchain-ops"
SYSTEM_PROMPT = "You are an operations assistant. Use the tools to look things up."


def make_tools(box: Toolbox, scratch: str) -> list[BaseTool]:
    def keep(name: str, content: str) -> str:
        with tempfile.NamedTemporaryFile("w", prefix=f"{name}-", dir=scratch, delete=False) as f:
            f.write(content)
        return content

    @tool(description=TOOL_SPECS["read_file"][0])
    def read_file(path: str) -> str:
        return keep("read_file", box.call("read_file", {"path": path}).content)

    @tool(description=TOOL_SPECS["write_file"][0])
    def write_file(path: str, content: str) -> str:
        return box.call("write_file", {"path": path, "content": content}).content

    @tool(description=TOOL_SPECS["run_command"][0])
    def run_command(argv: list[str]) -> str:
        return keep("run_command", box.call("run_command", {"argv": argv}).content)

    @tool(description=TOOL_SPECS["http_request"][0])
    def http_request(url: str, method: str = "GET", body: str | None = None) -> str:
        args = {"url": url, "method": method, "body": body}
        return keep("http_request", box.call("http_request", args).content)

    return [read_file, write_file, run_command, http_request]


def save_thread(thread_id: str, messages: list[Any]) -> None:
    threads = Path.home() / ".cache" / AGENT / "threads"
    threads.mkdir(parents=True, exist_ok=True)
    (threads / f"{thread_id}.json").write_text(json.dumps(messages_to_dict(messages)))


def main() -> int:
    task = task_from_argv(AGENT)
    log, _ = open_log(AGENT)
    log.info("task: %s", task)
    model = ChatOpenAI(model=os.environ.get("OPENAI_MODEL", "gpt-4o-mini"), temperature=0)
    thread_id = str(uuid.uuid4())
    with tempfile.TemporaryDirectory(prefix=f"{AGENT}-") as scratch:
        tools = make_tools(Toolbox(workspace(), log), scratch)
        agent = create_agent(
            model, tools, system_prompt=SYSTEM_PROMPT, checkpointer=InMemorySaver()
        )
        state = agent.invoke(
            {"messages": [{"role": "user", "content": task}]},
            {"configurable": {"thread_id": thread_id}, "recursion_limit": 12},
        )
    save_thread(thread_id, state["messages"])
    answer = str(state["messages"][-1].content)
    log.info("answer: %s", answer)
    emit("final", text=answer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
