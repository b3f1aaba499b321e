"""Exec lineage in the baseline: a program learned from one caller is allowed for that caller,
and the kernel lists say so (policy/lineage.py)."""

from __future__ import annotations

from corral.kernel.events import Event
from corral.policy import document
from corral.policy.baseline import Baseline
from corral.policy.blob import decode_payload, encode_payload
from corral.policy.lineage import base_list, caller_list, exec_lists

PY, NODE, SH = "/usr/bin/python3.11", "/usr/bin/node", "/usr/bin/dash"


def ev(path: str, caller: str, dim: str = "exec") -> Event:
    return Event(1_000_000_000, 1, 1, 1, 1, 0, 0, "x", dim, "allowed", "observe", "lsm", (), 0,
                 path, caller=caller)  # fmt: skip


def learned() -> Baseline:
    b = Baseline("a")
    b.observe(ev("/usr/bin/npx", PY))
    b.observe(ev(SH, NODE))  # npx's node runs sh
    b.observe(ev(NODE, SH))
    b.observe(ev("/usr/bin/git", ""))  # a fallback event: no caller known
    return b


def test_programs_are_allowed_for_the_callers_they_were_seen_from() -> None:
    b = learned()
    assert b.contains("exec", SH, NODE)
    assert not b.contains("exec", SH, PY)  # a prompt-injected `sh -c` from the agent itself
    assert not b.contains("exec", SH, "")  # an unknown caller gets the any-caller entries only
    assert b.contains("exec", "/usr/bin/git", PY) and b.contains("exec", "/usr/bin/git", "")
    assert b.contains("exec", SH)  # no caller given: is the program in the baseline at all
    assert b.observe(ev(SH, PY))  # learning it from another caller is a new kernel entry
    assert b.contains("exec", SH, PY)


def test_kernel_lists_per_caller_and_the_fallbacks_union() -> None:
    b = learned()
    el = exec_lists(b, 7, lineage=True)
    assert el.callers == {c: caller_list(7, i) for c, i in b.caller_ids.items()}
    assert el.lists[7].exact == ["/usr/bin/git"]
    assert el.lists[el.callers[NODE]].exact == [SH]
    assert el.lists[el.callers[PY]].exact == ["/usr/bin/npx"]
    assert {base_list(x) for x in el.lists} == {7}
    flat = exec_lists(b, 7, lineage=False)
    assert flat.callers == {} and list(flat.lists) == [7]
    assert sorted(flat.lists[7].exact) == sorted(["/usr/bin/git", SH, NODE, "/usr/bin/npx"])


def test_accept_without_a_caller_allows_any_caller() -> None:
    b = learned()
    assert b.add("exec", SH)
    assert b.contains("exec", SH, PY) and b.contains("exec", SH, "")
    assert b.add("exec", "/usr/bin/curl", caller=NODE)
    assert b.contains("exec", "/usr/bin/curl", NODE) and not b.contains("exec", "/usr/bin/curl", PY)


def test_callers_survive_storage_and_documents() -> None:
    b = learned()
    again = decode_payload(encode_payload(b))
    assert again.to_dict() == b.to_dict() and again.caller_ids == b.caller_ids
    text = document.dump_yaml(document.export(b))
    assert f"- {{path: {SH}, callers: [{NODE}], source: learned}}" in text
    doc = document.parse(text.encode())
    plan = document.plan(doc, None, agent="a", strategy="replace", rules=b.rules, now=5.0)
    assert plan.baseline.contains("exec", SH, NODE) and not plan.baseline.contains("exec", SH, PY)
    assert document.dump_yaml(document.export(plan.baseline)) == text


def test_v1_documents_cannot_carry_callers() -> None:
    head = "apiVersion: corral.io/v1\nkind: Baseline\nmetadata: {name: a}\nspec:\n"
    raw = (head + f"  exec:\n  - {{path: {SH}, callers: [{NODE}]}}\n").encode()
    try:
        document.parse(raw)
    except document.DocumentError as e:
        assert "need apiVersion corral.io/v2 or later" in str(e)
    else:
        raise AssertionError("a v1 document with callers was accepted")
