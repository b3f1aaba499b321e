"""Learned path patterns: the pure rules (what a pattern means, when evidence makes one, how
the kernel holds them). No state here; the pattern entries of a baseline live in sets.py.

Meaning
    A pattern is an absolute path in which ``?`` stands for exactly one character and ``*``
    for any run of characters (the empty one included), neither ever matching ``/``: a
    pattern has as many components as the paths it matches, and each wildcard stays inside
    its component. Every other character is itself (``*`` matches the literal ``*`` of the
    kernel's "/proc/*/..." rewrite too). The first wildcard is never in the first component
    ("/????/x" is refused), and a pattern is at most CORRAL_PATH_MAX - 1 bytes, like a path.

Learning (least general generalisation, from evidence)
    Two observed paths, or a learned pattern and a path, of the same *shape* merge into one
    pattern that differs from them only where they differ. Shape: the same components, each
    cut the same way into words (runs of ``[A-Za-z0-9_]``; ``?`` counts as a word character)
    and separators (every other character, which must be identical), word for word of the
    same length, except all-digit words whose length may differ. Where they differ:

    - timestamps (ISO 8601 and its file-name forms: "2026-12-06T04_24_11_513Z",
      "20261206-042411") found at the same place in both: every digit of the timestamp
      becomes ``?``;
    - UUIDs at the same place in both: every hex digit becomes ``?``;
    - all-digit words (pids, counters, epoch times) with at least 3 digits in one of them:
      the word becomes ``*`` ("run-1.log" and "run-2.log" stay two paths);
    - hex digests (12 or more hex digits): the whole word becomes ``?``;
    - other words of the same length: the run from the first to the last differing character
      becomes ``?``, when that is at least 4 characters and both runs look random: letters
      and digits mixed, switching between the two at least twice in one of them (Python's
      tempfile, mkstemp's XXXXXX: "k2j9x1ab", "3dysq4of"). "/usr/bin/grep" and
      "/usr/bin/curl" never merge, nor "_sha256" and "_random", nor "libssl3" and "libssh3".

    Anything else (a separator differs, a word differs in length, too few differing
    characters, names that do not look random) keeps both paths exact. The evidence is at
    least two different paths: one path is never generalised on its own.

    Never learned (found by a red-team run, 2026-12-06):
    - from a path holding ``*`` or ``?`` itself (other than the kernel's "/proc/*/"): the
      kernel has no escape, so "/etc/*100" and "/etc/*200" would have become "/etc/**";
    - a component that is only digits ("100", "200" would become ``*``: any name);
    - in or below ``PATTERN_NEVER`` (/etc/, secrets, /sys/, /boot/), below a directory named
      like ``SECRET_DIRS`` (.ssh, .aws, .gnupg, .kube, .docker, ...), or directly in a home
      directory (/root/, /home/NAME/);
    - for exec: any ``*`` (a program is named with ``?`` of its length), and anything that can
      match a path under a world-writable directory (``EXEC_PATTERN_NEVER``, checked by matching,
      so "/var/*/x" is refused for /var/tmp/): a random name there is what a dropped payload
      looks like.
    Accept such a pattern explicitly (``corralctl accept --exec GLOB``) if an agent really
    does it.

In the kernel
    Per (list, *literal prefix*: the bytes before the first wildcard) one entry of an LPM trie
    holds every pattern whose literal prefix is a prefix of it, at most
    CORRAL_PATTERN_SET_MAX: the longest-prefix lookup of a path then finds, in one entry,
    every pattern the path could match, and a bounded matcher runs over each.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache

WILDCARDS = frozenset("*?")
EXEC_PATTERN_NEVER: tuple[str, ...] = ("/tmp/", "/var/tmp/", "/dev/shm/", "/run/user/")
# never a learned pattern in or below these (accept one by hand if it must be)
PATTERN_NEVER: tuple[str, ...] = ("/etc/", "/var/run/secrets/", "/run/secrets/", "/sys/", "/boot/")
SECRET_DIRS = frozenset({".ssh", ".gnupg", ".aws", ".kube", ".docker", ".azure", "gcloud"})
MIN_RANDOM_CHARS = 4
MIN_COUNTER_DIGITS = 3

_WORD = re.compile(r"[A-Za-z0-9_?]+")
# '?' may stand for a digit (a learned pattern has the shape of the paths it came from)
_TIMESTAMP = re.compile(
    r"(?<![0-9?])(?:"
    r"[0-9?]{4}-[0-9?]{2}-[0-9?]{2}(?:[T_ -][0-9?]{2}[:_.-]?[0-9?]{2}(?:[:_.-]?[0-9?]{2})?"
    r"(?:[._,][0-9?]{1,9})?Z?)?"
    r"|[0-9?]{8}[T_-][0-9?]{4,6}"
    r")(?![0-9?])"
)
_H = "[0-9A-Fa-f?]"
_UUID = re.compile(rf"(?<!{_H}){_H}{{8}}-{_H}{{4}}-{_H}{{4}}-{_H}{{4}}-{_H}{{12}}(?!{_H})")
_HEX_WORD = re.compile(r"[0-9a-f?]{12,}|[0-9A-F?]{12,}")


class PatternError(ValueError):
    """A glob corral cannot enforce; the message says why and what to do."""


@cache
def _path_max() -> int:
    from corral.kernel.layout import C

    return int(C.CORRAL_PATH_MAX)


@cache
def set_max() -> int:
    """Patterns one kernel entry holds (CORRAL_PATTERN_SET_MAX from corral.h)."""
    from corral.kernel.layout import C

    return int(C.CORRAL_PATTERN_SET_MAX)


def is_pattern(text: str) -> bool:
    return any(c in WILDCARDS for c in text)


def literal_prefix(pattern: str) -> str:
    """The characters before the first wildcard."""
    for i, c in enumerate(pattern):
        if c in WILDCARDS:
            return pattern[:i]
    return pattern


def check_pattern(pattern: str) -> str:
    """pattern, or PatternError saying why the kernel cannot hold it."""
    if "\0" in pattern:
        raise PatternError("a pattern cannot contain a NUL byte")
    if not pattern.startswith("/"):
        raise PatternError(f"{pattern!r}: a pattern is an absolute path")
    if not is_pattern(pattern):
        raise PatternError(f"{pattern!r} has no wildcard (* or ?): it is a plain path")
    if "/" not in literal_prefix(pattern)[1:]:
        raise PatternError(
            f"{pattern!r}: the first wildcard is in the first component, which would match "
            "names directly under /; name the directory (e.g. /tmp/agent-*.json)"
        )
    if pattern.endswith("/"):
        raise PatternError(f"{pattern!r}: a pattern names files, it does not end in /")
    if len(pattern.encode("utf-8", "surrogateescape")) > _path_max() - 1:
        raise PatternError(
            f"{pattern!r} is longer than the kernel's path buffer ({_path_max() - 1} bytes)"
        )
    return pattern


@lru_cache(maxsize=4096)
def compiled(pattern: str) -> re.Pattern[bytes]:
    """The reference matcher (the kernel's is in bpf/corral.bpf.c), over bytes as the kernel
    sees them: ``?`` is one byte, so one byte of a multi-byte UTF-8 character."""
    out = []
    for c in pattern.encode("utf-8", "surrogateescape"):
        if c == ord("*"):
            out.append(b"[^/]*")
        elif c == ord("?"):
            out.append(b"[^/]")
        else:
            out.append(re.escape(bytes([c])))
    return re.compile(b"".join(out), re.DOTALL)


def matches(pattern: str, path: str) -> bool:
    return compiled(pattern).fullmatch(path.encode("utf-8", "surrogateescape")) is not None


def widening(pattern: str) -> str:
    """What accepting this pattern allows, in one sentence for the operator."""
    parts = pattern.split("/")
    wild = [i for i, p in enumerate(parts) if is_pattern(p)]
    where = "/".join(parts[: wild[0]]) + "/"
    stars = pattern.count("*")
    what = "any run of characters" if stars else "exactly the characters marked ?"
    return (
        f"allows paths under {where} whose names match {pattern} ({what} where the wildcards "
        "are, never a / : no subdirectory beyond the pattern's own components)"
    )


# ---- learning -----------------------------------------------------------------------------------


def shape(path: str) -> tuple[object, ...] | None:
    """The shape two paths (or a learned pattern and a path) must share to merge (module
    docstring); None for a relative path, which never generalises."""
    if not path.startswith("/"):
        return None
    out: list[object] = []
    for comp in path.split("/")[1:]:
        out.append(_component_shape(comp))
    return tuple(out)


Token = tuple[str, str, str]  # (kind: uuid | ts | word | sep, masked form, text)


def _tokens(comp: str) -> list[Token]:
    """A component cut into UUIDs, timestamps (masked: their variable characters as ?),
    words and separator characters."""
    spans: list[tuple[int, int, str]] = [(m.start(), m.end(), "uuid") for m in _UUID.finditer(comp)]
    for m in _TIMESTAMP.finditer(comp):
        if not any(a < m.end() and m.start() < b for a, b, _ in spans):
            spans.append((m.start(), m.end(), "ts"))
    spans.sort()
    out: list[Token] = []
    pos = 0
    for a, b, kind in spans:
        out += _plain_tokens(comp[pos:a])
        text = comp[a:b]
        hexy = kind == "uuid"
        masked = "".join(
            "?" if c == "?" or c.isdigit() or (hexy and c in "abcdefABCDEF") else c for c in text
        )
        out.append((kind, masked, text))
        pos = b
    out += _plain_tokens(comp[pos:])
    return out


def _plain_tokens(text: str) -> list[Token]:
    out: list[Token] = []
    pos = 0
    for m in _WORD.finditer(text):
        out += [("sep", c, c) for c in text[pos : m.start()]]
        w = m.group()
        out.append(("word", "d" if w.isdigit() or w == "*" else str(len(w)), w))
        pos = m.end()
    out += [("sep", c, c) for c in text[pos:]]
    return out


def _component_shape(comp: str) -> tuple[object, ...]:
    return tuple((kind, masked) for kind, masked, _ in _tokens(comp))


def generalise(known: str, path: str, *, dimension: str, known_pattern: bool = False) -> str | None:
    """The least general pattern covering known (a learned pattern when known_pattern, else a
    path) and path, or None when the evidence does not justify one (module docstring)."""
    if known == path or not path.startswith("/") or not known.startswith("/"):
        return None
    if _literal_wildcards(path) or (not known_pattern and _literal_wildcards(known)):
        return None  # a * or ? in a name is a character, not evidence: never a wildcard
    a, b = known.split("/"), path.split("/")
    if len(a) != len(b):
        return None
    out: list[str] = []
    evidence = _Evidence()
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x == y:
            out.append(x)
            continue
        if i < 2:
            return None  # first component: never a wildcard (check_pattern)
        merged = _merge_component(x, y, evidence)
        if merged is None:
            return None
        out.append(merged)
    if not evidence.enough():
        return None
    pattern = "/".join(out)
    if not _allowed_here(pattern, dimension):
        return None
    try:
        return check_pattern(pattern)
    except PatternError:
        return None


def merge_label(known: str, label: str) -> str | None:
    """The least general pattern covering two DNS labels (or a learned label pattern and a
    label), by the same evidence as two path components (module docstring): "b-k2j9x1ab" and
    "b-3dysq4of" give "b-????????"; "eu" and "us" give nothing. None: keep both names."""
    if known == label or any(c in WILDCARDS for c in label):
        return None
    evidence = _Evidence()
    merged = _merge_component(known, label, evidence)
    return merged if merged is not None and evidence.enough() else None


def _literal_wildcards(path: str) -> bool:
    """A * or ? in the path other than the kernel's own "/proc/*/" rewrite."""
    rest = path[len("/proc/*") :] if path.startswith("/proc/*/") else path
    return any(c in WILDCARDS for c in rest)


def _allowed_here(pattern: str, dimension: str) -> bool:
    """Where learning may put a pattern (module docstring): never where secrets live, never
    directly in a home directory, no exec pattern that can reach a world-writable directory,
    and an exec pattern names programs of one length (no *)."""
    parts = pattern.split("/")
    first = next(i for i, c in enumerate(parts) if is_pattern(c))
    parent = "/".join(parts[:first]) + "/"
    if any(matches(pattern, p) or _reaches(parts, p) for p in PATTERN_NEVER):
        return False
    if any(c in SECRET_DIRS for c in parts[:first]):
        return False
    if re.fullmatch(r"/root/|/home/[^/]+/", parent):
        return False
    return dimension != "exec" or not (
        "*" in pattern or any(_reaches(parts, p) for p in EXEC_PATTERN_NEVER)
    )


def _reaches(parts: list[str], directory: str) -> bool:
    """Can the pattern (its components) match a path beneath directory ("/tmp/")?"""
    want = directory.rstrip("/").split("/")
    if len(parts) <= len(want):
        return False
    return matches("/".join(parts[: len(want)]), "/".join(want))


@dataclass
class _Evidence:
    strong: bool = False  # a timestamp, UUID, counter, or a word already >= 4 wildcards
    random: bool = False  # random words (_random_pair) or digests

    def enough(self) -> bool:
        return self.strong or self.random


def _merge_component(x: str, y: str, ev: _Evidence) -> str | None:
    tx, ty = _tokens(x), _tokens(y)
    if [t[:2] for t in tx] != [t[:2] for t in ty]:
        return None
    out: list[str] = []
    if len(tx) == 1 and tx[0][0] == "word" and tx[0][1] == "d":
        return None  # a name of digits alone ("100") would become *, any name at all
    for (kind, masked, u), (_, _, v) in zip(tx, ty, strict=True):
        if u == v:
            out.append(u)
        elif kind in ("uuid", "ts"):
            ev.strong = True
            out.append(masked)
        else:
            w = _merge_word(u, v, ev)
            if w is None:
                return None
            out.append(w)
    return "".join(out)


def _merge_word(u: str, v: str, ev: _Evidence) -> str | None:
    if u == "*" or (u.isdigit() and v.isdigit()):
        if u == "*" or max(len(u), len(v)) >= MIN_COUNTER_DIGITS:
            ev.strong = True
            return "*"
        return None
    if len(u) != len(v):
        return None
    diff = [i for i, (cu, cv) in enumerate(zip(u, v, strict=True)) if cu != cv]
    hexy = bool(_HEX_WORD.fullmatch(u) and _HEX_WORD.fullmatch(v))
    if hexy:
        lo, hi = 0, len(u) - 1  # a digest: every character varies, agreeing ones by chance
    else:
        lo, hi = diff[0], diff[-1]  # the varying run; inner agreements are chance too
    word = u[:lo] + "?" * (hi - lo + 1) + u[hi + 1 :]
    if word.count("?") < MIN_RANDOM_CHARS:
        return None
    if u.count("?") >= MIN_RANDOM_CHARS:
        ev.strong = True  # widening a random word the evidence already showed
    elif hexy or _random_pair(u[lo : hi + 1], v[lo : hi + 1]):
        ev.random = True
    else:
        return None  # "_sha256" and "_random", "grep" and "curl": names, not random ones
    return word


def _random_pair(a: str, b: str) -> bool:
    """Both runs mix letters and digits, and one switches between them at least twice
    ("k2j9x1ab"): a name with a version or a size at its end ("sha256") does not."""
    return _mixed(a) and _mixed(b) and max(_switches(a), _switches(b)) >= 2


def _mixed(w: str) -> bool:
    return any(c.isdigit() for c in w) and any(c.isalpha() for c in w)


def _switches(w: str) -> int:
    kinds = [c.isdigit() for c in w if c.isalnum()]
    return sum(1 for x, y in itertools.pairwise(kinds) if x != y)


# ---- the kernel's form --------------------------------------------------------------------------


def kernel_groups(patterns: Iterable[str]) -> dict[str, list[str]]:
    """literal prefix -> the patterns the kernel entry for it holds: every pattern whose literal
    prefix is a prefix of it, sorted. PatternError when one holds more than set_max()."""
    pats = sorted(set(patterns))
    prefixes = {literal_prefix(p): None for p in pats}
    out: dict[str, list[str]] = {}
    for pre in prefixes:
        members = [p for p in pats if pre.startswith(literal_prefix(p))]
        if len(members) > set_max():
            raise PatternError(
                f"{len(members)} patterns apply to paths starting {pre!r}; the kernel holds "
                f"at most {set_max()}: accept a wider pattern or fewer"
            )
        out[pre] = members
    return out


def fits_kernel(patterns: Iterable[str]) -> bool:
    try:
        kernel_groups(patterns)
    except PatternError:
        return False
    return True
