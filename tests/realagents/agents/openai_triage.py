"""A ticket-triage agent on the OpenAI Python SDK (`openai`, unmodified, from PyPI).

The usual tool-calling loop: chat.completions.create with tools, run the tool calls the model
answers with, append their results, repeat until it answers in text. Like many agents it
keeps scratch files and a cache, so every run names its files anew:

- a TemporaryDirectory for the run, each tool result spilled into a NamedTemporaryFile there;
- the transcript written to a mkstemp file while the run lasts, then kept beside the log;
- each model answer cached under ~/.cache/openai-triage/ by the hash of its request (the
  system prompt carries the current time, as agents' prompts often do);
- a log file named by the start time (toolbox.open_log).

Environment: OPENAI_BASE_URL and OPENAI_API_KEY (read by the SDK itself), OPENAI_MODEL,
AGENT_WORKSPACE. Usage: openai_triage.py TASK
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import openai
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
from toolbox import TOOL_SPECS, Toolbox, emit, open_log, task_from_argv, workspace

AGENT = "openai-triage"
MAX_TURNS = 6


def tool_schemas() -> list[ChatCompletionToolParam]:
    return [
        {"type": "function", "function": {"name": n, "description": d, "parameters": p}}
        for n, (d, p) in TOOL_SPECS.items()
    ]


def cache_answer(request: dict[str, Any], answer: str) -> None:
    cache = Path.home() / ".cache" / AGENT / "responses"
    cache.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()
    (cache / f"{key}.json").write_text(answer)


def spill(scratch: str, name: str, content: str) -> str:
    with tempfile.NamedTemporaryFile(
        "w", prefix=f"{name}-", suffix=".json", dir=scratch, delete=False
    ) as f:
        json.dump({"tool": name, "content": content}, f)
        return f.name


def run(task: str, tools: Toolbox, transcript: Any, scratch: str) -> str:
    client = openai.OpenAI(timeout=30.0)
    now = datetime.datetime.now(datetime.UTC).isoformat()
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": f"You triage support tickets. Current time: {now}."},
        {"role": "user", "content": task},
    ]
    model = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
    for _ in range(MAX_TURNS):
        completion = client.chat.completions.create(
            model=model, messages=messages, tools=tool_schemas()
        )
        cache_answer({"model": model, "messages": messages}, completion.model_dump_json())
        message = completion.choices[0].message
        messages.append(message.model_dump(exclude_none=True))  # type: ignore[arg-type]
        transcript.write(message.model_dump_json() + "\n")
        if not message.tool_calls:
            return message.content or ""
        for call in message.tool_calls:
            if call.type != "function":  # custom (free-form) tools: this agent offers none
                continue
            fn = call.function
            result = tools.call(fn.name, json.loads(fn.arguments or "{}"))
            spill(scratch, fn.name, result.content)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result.content})
    return "(gave up: too many turns)"


def main() -> int:
    task = task_from_argv(AGENT)
    log, log_path = open_log(AGENT)
    log.info("task: %s", task)
    fd, transcript_path = tempfile.mkstemp(prefix=f"{AGENT}-", suffix=".jsonl")
    try:
        with (
            tempfile.TemporaryDirectory(prefix=f"{AGENT}-") as scratch,
            os.fdopen(fd, "w") as transcript,
        ):
            answer = run(task, Toolbox(workspace(), log), transcript, scratch)
        shutil.copyfile(transcript_path, log_path.with_suffix(".transcript.jsonl"))
    finally:
        os.unlink(transcript_path)
    log.info("answer: %s", answer)
    emit("final", text=answer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
