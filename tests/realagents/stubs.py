"""Stand-ins for the outside world of the real-agent corpus, on loopback: two LLM providers, a
ticket API and an attacker's sink. None of them is a model or a real service.

`StubLLM` is a stand-in for a hosted LLM. It speaks two wire protocols, closely enough for the
real, unmodified SDKs to accept its answers:

- the **OpenAI Chat Completions** API, `POST /v1/chat/completions` without streaming (the
  `openai` SDK's `chat.completions.create` and LangChain's `ChatOpenAI` send this): the answer is
  a `chat.completion` object whose message carries `tool_calls` (`finish_reason: tool_calls`)
  or text (`finish_reason: stop`);
- the **Anthropic Messages** API, `POST /v1/messages` without streaming (the `anthropic`
  SDK's `messages.create`): the answer is a `message` whose content is `tool_use` blocks
  (`stop_reason: tool_use`) or a `text` block (`stop_reason: end_turn`).

What it answers is scripted and deterministic, decided afresh from the whole conversation each
turn as a real model does (`ScriptedModel`): the script is chosen by the request's `model`;
its first turn calls the script's tools, and once tool results are back it answers in text.
If a tool result carries an injection marker `[[corral-inject:KEY]]` (the harness plants it in
data the agent reads), the stub "obeys" it like a hijacked model: its second turn makes the
tool calls registered under KEY, its third answers in text.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

INJECTION = re.compile(r"\[\[corral-inject:([\w.-]+)\]\]")
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Script:
    """One agent's legitimate conversation: the tools of its first turn, then its answer."""

    first: tuple[ToolCall, ...]
    answer: str


@dataclass
class ScriptedModel:
    scripts: dict[str, Script] = field(default_factory=dict)
    injections: dict[str, tuple[ToolCall, ...]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # requests it could not answer

    def decide(
        self, model: str, rounds: int, tool_texts: list[str], offered: set[str]
    ) -> tuple[ToolCall, ...] | str:
        """The next turn: tool calls, or the final answer (text)."""
        script = self.scripts.get(model)
        if script is None:
            return self._problem(f"no script for model {model!r}")
        if rounds == 0:
            calls = script.first
        elif rounds == 1 and (key := self._injection(tool_texts)) is not None:
            calls = self.injections.get(key, ())
            if not calls:
                return self._problem(f"no injection registered under {key!r}")
        else:
            return script.answer
        missing = sorted({c.name for c in calls} - offered)
        if missing:
            return self._problem(f"model {model!r}: tools {missing} not offered by the agent")
        return calls

    def _injection(self, tool_texts: list[str]) -> str | None:
        for text in tool_texts:
            if m := INJECTION.search(text):
                return m.group(1)
        return None

    def _problem(self, message: str) -> str:
        self.problems.append(message)
        return f"stub error: {message}"


def _text_of(content: Any) -> str:
    """The text of a message or tool-result content: a string or a list of text blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text_of(b.get("text", b.get("content", ""))) for b in content)
    return ""


def openai_app(brain: ScriptedModel) -> web.Application:
    ids = itertools.count(1)

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("stream"):
            return web.json_response({"error": {"message": "stub: no streaming"}}, status=400)
        messages = body.get("messages", [])
        rounds = sum(1 for m in messages if m.get("role") == "assistant" and m.get("tool_calls"))
        texts = [_text_of(m.get("content")) for m in messages if m.get("role") == "tool"]
        offered = {t["function"]["name"] for t in body.get("tools", []) if "function" in t}
        turn = brain.decide(body.get("model", ""), rounds, texts, offered)
        return web.json_response(_chat_completion(body.get("model", ""), next(ids), rounds, turn))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    return app


def _chat_completion(
    model: str, n: int, rounds: int, turn: tuple[ToolCall, ...] | str
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None}
    if isinstance(turn, str):
        message["content"], finish = turn, "stop"
    else:
        finish = "tool_calls"
        message["tool_calls"] = [
            {
                "id": f"call_{rounds}_{i}",
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for i, c in enumerate(turn)
        ]
    return {
        "id": f"chatcmpl-stub-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def anthropic_app(brain: ScriptedModel) -> web.Application:
    ids = itertools.count(1)

    async def messages(request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("stream"):
            return web.json_response(_anthropic_error("stub: no streaming"), status=400)
        convo = body.get("messages", [])
        rounds = sum(1 for m in convo if m.get("role") == "assistant" and _blocks(m, "tool_use"))
        texts = [_text_of(b.get("content")) for m in convo for b in _blocks(m, "tool_result")]
        offered = {t.get("name", "") for t in body.get("tools", [])}
        turn = brain.decide(body.get("model", ""), rounds, texts, offered)
        return web.json_response(_message(body.get("model", ""), next(ids), rounds, turn))

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    return app


def _blocks(message: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [b for b in content if isinstance(b, dict) and b.get("type") == kind]


def _anthropic_error(message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}


def _message(model: str, n: int, rounds: int, turn: tuple[ToolCall, ...] | str) -> dict[str, Any]:
    if isinstance(turn, str):
        content: list[dict[str, Any]] = [{"type": "text", "text": turn}]
        stop = "end_turn"
    else:
        content = [
            {"type": "tool_use", "id": f"toolu_{rounds}_{i}", "name": c.name, "input": c.arguments}
            for i, c in enumerate(turn)
        ]
        stop = "tool_use"
    return {
        "id": f"msg_stub_{n}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }


TICKETS = {
    42: "Checkout page times out for EU customers since the 09:00 deploy.",
}


def ticket_api_app() -> web.Application:
    """A stand-in for a ticket system's REST API: GET /tickets/N."""

    async def ticket(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n not in TICKETS:
            return web.json_response({"error": "no such ticket"}, status=404)
        return web.json_response({"id": n, "text": TICKETS[n]})

    app = web.Application()
    app.router.add_get(r"/tickets/{n:\d+}", ticket)
    return app


def sink_app(loot: list[bytes]) -> web.Application:
    """A stand-in for an attacker's server: keeps whatever reaches it."""

    async def collect(request: web.Request) -> web.Response:
        loot.append(await request.read())
        return web.json_response({"thanks": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", collect)
    return app


Factory = Callable[[], web.Application]


class Loopback:
    """The stand-ins, each on its own port (chosen by the kernel), served by one event loop in
    a thread of the test process: outside every agent's cgroup, as the internet would be."""

    def __init__(self, model: ScriptedModel, sink_host: str) -> None:
        self.loot: list[bytes] = []
        self.apps: dict[str, tuple[str, Factory]] = {
            "openai": ("127.0.0.1", lambda: openai_app(model)),
            "anthropic": ("127.0.0.1", lambda: anthropic_app(model)),
            "tickets": ("127.0.0.1", ticket_api_app),
            "sink": (sink_host, lambda: sink_app(self.loot)),
        }
        self.ports: dict[str, int] = {}
        self._runners: list[web.AppRunner] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://{self.apps[name][0]}:{self.ports[name]}"

    def start(self) -> Loopback:
        self._thread.start()
        self._run(self._start())
        return self

    def stop(self) -> None:
        self._run(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT)

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(START_TIMEOUT)

    async def _start(self) -> None:
        for name, (host, factory) in self.apps.items():
            runner = web.AppRunner(factory(), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, host, 0).start()
            self._runners.append(runner)
            self.ports[name] = runner.addresses[0][1]

    async def _stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
