"""Learned path patterns: when evidence makes one, what it matches, and what it never does."""

from __future__ import annotations

import random
import tempfile
import uuid

import pytest

from corral.policy import patterns as pat
from corral.policy.baseline import Baseline
from corral.policy.patterns import PatternError, generalise, kernel_groups, matches


def gen(a: str, b: str, dim: str = "open", *, pattern: bool = False) -> str | None:
    return generalise(a, b, dimension=dim, known_pattern=pattern)


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [
        # Python tempfile: 8 characters of [a-z0-9_]
        ("/tmp/tmpk2j9x1ab", "/tmp/tmp3dysq4of", "/tmp/tmp????????"),
        ("/tmp/agent-scratch-k2j9x1ab.json", "/tmp/agent-scratch-zq0_r7tm.json",
         "/tmp/agent-scratch-????????.json"),
        # mkdtemp directory, same file inside
        ("/tmp/tmpk2j9x1ab/out.json", "/tmp/tmp3dysq4of/out.json", "/tmp/tmp????????/out.json"),
        # npm's timestamped debug log: every digit of the timestamp, not just those that differ
        ("/root/.npm/_logs/2026-12-06T04_24_11_513Z-debug-0.log",
         "/root/.npm/_logs/2026-12-06T04_31_07_902Z-debug-0.log",
         "/root/.npm/_logs/????-??-??T??_??_??_???Z-debug-0.log"),
        # UUIDs: hex digits only, the dashes stay
        ("/var/lib/a/0f8fad5b-d9cb-469f-a165-70867728950e.lock",
         "/var/lib/a/7c9e6679-7425-40de-944b-e07fc1f90ae7.lock",
         "/var/lib/a/????????-????-????-????-????????????.lock"),
        # pids and counters of 3+ digits: any length
        ("/var/run/app/worker-1234.sock", "/var/run/app/worker-98765.sock",
         "/var/run/app/worker-*.sock"),
        # hex digests
        ("/cache/objects/3f786850e387550fdab836ed7e6dc881de23001b",
         "/cache/objects/89e6c98d92887913cadf06b2adb97f26cde4849b",
         "/cache/objects/????????????????????????????????????????"),
    ],
)  # fmt: skip
def test_evidence_makes_a_pattern_confined_to_the_varying_part(a: str, b: str, want: str) -> None:
    assert gen(a, b) == want
    assert gen(b, a) == want
    assert matches(want, a) and matches(want, b)


@pytest.mark.parametrize(
    ("a", "b", "why"),
    [
        ("/usr/bin/grep", "/usr/bin/curl", "words, no digit: not random"),
        ("/srv/app/run-1.log", "/srv/app/run-2.log", "a 1-digit counter is not evidence"),
        ("/usr/lib/libssl3.so", "/usr/lib/libssh3.so", "one character differs"),
        ("/py/lib-dynload/_sha256.so", "/py/lib-dynload/_random.so", "module names"),
        ("/py/lib-dynload/_sha256.so", "/py/lib-dynload/_blake2.so", "versions at the end"),
        ("/tmp/agent-k2j9x1ab.json", "/tmp/agent-k2j9x1ab.yaml", "a different extension"),
        ("/tmp/a-k2j9x1ab", "/tmp/a_k2j9x1ab", "a separator differs"),
        ("/tmp/tmpk2j9x1ab", "/tmp/tmpk2j9x1abc", "a word of another length"),
        ("/tmp/x/tmpk2j9x1ab", "/tmp/tmpk2j9x1ab", "another depth"),
        ("/k2j9x1ab/x", "/3dysq4of/x", "a wildcard in the first component"),
        ("relative/tmpk2j9x1ab", "relative/tmp3dysq4of", "relative paths"),
    ],
)
def test_no_pattern_without_evidence(a: str, b: str, why: str) -> None:
    assert gen(a, b) is None, why


def test_exec_never_learns_patterns_in_temp_dirs() -> None:
    a, b = "/tmp/tmpk2j9x1ab/tool", "/tmp/tmp3dysq4of/tool"
    assert gen(a, b, "exec") is None
    assert gen(a, b, "open") == "/tmp/tmp????????/tool"
    assert gen("/opt/x/k2j9x1ab/tool", "/opt/x/3dysq4of/tool", "exec") == "/opt/x/????????/tool"


@pytest.mark.parametrize(
    ("a", "b", "dim", "why"),
    [
        ("/etc/*100", "/etc/*200", "open", "a literal * would become every file in /etc"),
        ("/root/*/*100", "/root/*/*200", "open", "literal * reaching ~/.ssh and ~/.aws"),
        ("/usr/*/*100", "/usr/*/*200", "exec", "literal * reaching every program in /usr/bin"),
        ("/srv/d/??????", "/srv/d/k2j9x1", "open", "a file named ?????? is not evidence"),
        ("/var/*/k2j9x1ab", "/var/*/z8y7w6v5", "exec", "a wildcard parent reaching /var/tmp"),
        ("/dev/x/k2j9x1ab", "/dev/x/z8y7w6v5", "open", "(control: allowed)"),
        ("/etc/k2j9x1", "/etc/z8y7w6", "open", "random names in /etc would match shadow"),
        ("/root/.ssh/k2j9x1", "/root/.ssh/z8y7w6", "open", "…and id_rsa"),
        ("/home/a/.aws/k2j9x1ab", "/home/a/.aws/z8y7w6v5", "open", "below a secrets dir"),
        ("/root/k2j9x1ab.json", "/root/z8y7w6v5.json", "open", "directly in a home dir"),
        ("/root/.ssh/100", "/root/.ssh/200", "open", "digits alone would become *"),
        ("/srv/data/100", "/srv/data/200", "open", "digits alone would become *"),
        ("/opt/app/tool-100", "/opt/app/tool-200", "exec", "tool-* would run tool-evil"),
    ],
)
def test_red_team_widenings_are_refused(a: str, b: str, dim: str, why: str) -> None:
    """Found by a red-team run (2026-12-06): each became a pattern far wider than evidence."""
    got = gen(a, b, dim)
    if why.startswith("(control"):
        assert got == "/dev/x/????????"
    else:
        assert got is None, (why, got)


def test_question_mark_is_one_byte_like_in_the_kernel() -> None:
    assert matches("/d/q??", "/d/qé") and not matches("/d/q??", "/d/qéé")


def test_a_learned_pattern_widens_where_new_evidence_differs() -> None:
    # two names that happened to share their first random character
    narrow = gen("/tmp/tmpak2j9x1b", "/tmp/tmpa3dy5q4o")
    assert narrow == "/tmp/tmpa???????"
    assert gen(narrow, "/tmp/tmpz12345ab", pattern=True) == "/tmp/tmp????????"


def test_real_tempfile_names_always_end_in_one_pattern() -> None:
    """Python's own tempfile, 200 names: one pattern per shape after learning."""
    b = Baseline("t")
    d = tempfile.gettempdir()
    for _ in range(200):
        name = next(tempfile._get_candidate_names())  # type: ignore[attr-defined]
        b.add("open", f"{d}/agent-scratch-{name}.json", source="learned")
    pats = b.kernel_patterns("open")
    assert pats == [f"{d}/agent-scratch-????????.json"], pats
    assert b.kernel_entries("open") == ([], [])
    assert b.contains("open", f"{d}/agent-scratch-abcdefgh.json")
    assert not b.contains("open", f"{d}/agent-scratch-abcdefgh.json.bak")
    assert not b.contains("open", f"{d}/agent-scratch-abcdefgh/x.json")


def test_learning_keeps_secrets_exact() -> None:
    b = Baseline("t")
    for p in ("/root/.ssh/id_ed25519", "/root/.ssh/id_rsa", "/etc/shadow", "/etc/gshadow"):
        b.add("open", p, source="learned")
    assert b.kernel_patterns("open") == []
    assert not b.contains("open", "/root/.ssh/id_ecdsa")


def test_uuid_files_generalise_with_uuid4() -> None:
    b = Baseline("t")
    for _ in range(20):
        b.add("open", f"/var/lib/agent/sessions/{uuid.uuid4()}.json", source="learned")
    assert b.kernel_patterns("open") == [
        "/var/lib/agent/sessions/????????-????-????-????-????????????.json"
    ]


def test_accept_glob_covers_exact_entries_and_refuses_what_the_kernel_cannot_hold() -> None:
    b = Baseline("t")
    b.add("open", "/data/in/a-1.csv", source="learned")
    assert b.add("open", "/data/in/*.csv", pattern=True)
    assert b.kernel_entries("open") == ([], [])
    assert b.contains("open", "/data/in/zzz.csv") and not b.contains("open", "/data/in/x/y.csv")
    with pytest.raises(PatternError, match="first component"):
        b.add("open", "/*.csv", pattern=True)
    with pytest.raises(PatternError, match="no wildcard"):
        b.add("open", "/data/x.csv", pattern=True)
    for i in range(pat.set_max() - 1):
        b.add("open", f"/data/in/{'?' * (i + 1)}.txt", pattern=True)
    with pytest.raises(PatternError, match="at most"):
        b.add("open", "/data/in/x*.log", pattern=True)


def test_kernel_groups_hold_every_pattern_a_path_can_meet() -> None:
    globs = ["/tmp/tmp????????", "/tmp/*.json", "/tmp/tmpdir/*.log", "/var/x/*"]
    groups = kernel_groups(globs)
    assert groups == {
        "/tmp/tmp": ["/tmp/*.json", "/tmp/tmp????????"],
        "/tmp/": ["/tmp/*.json"],
        "/tmp/tmpdir/": ["/tmp/*.json", "/tmp/tmp????????", "/tmp/tmpdir/*.log"],
        "/var/x/": ["/var/x/*"],
    }
    # the longest literal prefix a path starts with holds every pattern that matches it
    rnd = random.Random(1)
    for _ in range(500):
        path = "/" + "".join(rnd.choice("tmp/vardix.jsonlog") for _ in range(rnd.randint(1, 20)))
        best = max((p for p in groups if path.startswith(p)), key=len, default=None)
        want = {g for g in globs if matches(g, path)}
        assert want <= set(groups.get(best, []) if best else []), path


def test_star_and_question_never_match_a_slash() -> None:
    assert matches("/a/*", "/a/b") and not matches("/a/*", "/a/b/c")
    assert matches("/a/?", "/a/b") and not matches("/a/??", "/a//")
    assert matches("/proc/*/status", "/proc/*/status")
    assert not matches("/a/*.log", "/a/x.log/y")
