"""Name patterns: what they mean and when evidence makes one.

Meaning
    A name pattern is a normalised name in which ``?`` stands for one character and ``*`` for
    any run of characters, neither ever matching ``.``: a pattern has as many labels as the
    names it matches, and each wildcard stays inside its label (``*.s3.amazonaws.com`` matches
    ``b1.s3.amazonaws.com``, not ``a.b1.s3.amazonaws.com`` nor ``s3.amazonaws.com``). The
    registrable domain and its public suffix are always literal: no pattern matches names of
    two registrable domains (``*.com``, ``api.*.com`` and ``*.co.uk`` are refused), and a name
    with no registrable domain (``db.default.svc.cluster.local``) never has a wildcard.

Learning (same evidence as path components, policy.patterns)
    Two names with the same number of labels that differ only left of their (shared)
    registrable domain merge where each differing label merges as a path component would:
    a timestamp, a UUID, a counter of 3+ digits, a hex digest or a random word
    ("b-k2j9x1ab" and "b-3dysq4of" make "b-????????.s3.amazonaws.com"). "eu.api.example.com"
    and "us.api.example.com" stay two names; one name never generalises on its own.
"""

from __future__ import annotations

import re
from functools import lru_cache

from corral.policy.patterns import merge_label

from .domains import DomainError, normalise, registrable

WILDCARDS = frozenset("*?")


def is_pattern(name: str) -> bool:
    return any(c in WILDCARDS for c in name)


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str]:
    out = []
    for c in pattern:
        out.append("[^.]" if c == "?" else "[^.]*" if c == "*" else re.escape(c))
    return re.compile("".join(out))


def name_matches(pattern: str, name: str) -> bool:
    """Does the (normalised) name match the pattern (module docstring)?"""
    return bool(_compiled(pattern).fullmatch(name))


def check_name_pattern(text: str) -> str:
    """A name or name pattern as given by an operator (`accept --connect '*.x.example.com:443'`),
    normalised; DomainError says what is wrong with it."""
    plain = text.replace("*", "a").replace("?", "a")
    name = normalise(plain)
    if not is_pattern(text):
        return name
    pattern = _respell(text.strip().rstrip(".").lower(), name)
    domain = registrable(name)
    if domain is None:
        raise DomainError(f"{text!r}: only names with a registrable domain take wildcards")
    fixed = domain.count(".") + 1
    if any(is_pattern(label) for label in pattern.split(".")[-fixed:]):
        raise DomainError(
            f"{text!r}: a wildcard in the registrable domain {_masked(pattern, fixed)} would "
            "allow names of other owners"
        )
    return pattern


def _respell(pattern: str, name: str) -> str:
    """The pattern's wildcards put back into the normalised name (same length: ASCII only)."""
    if len(pattern) != len(name) or not pattern.isascii():
        raise DomainError(f"{pattern!r}: wildcards go in ASCII labels only")
    return "".join(p if p in WILDCARDS else n for p, n in zip(pattern, name, strict=True))


def _masked(pattern: str, fixed: int) -> str:
    return ".".join(pattern.split(".")[-fixed:])


def parent_wildcard(name: str) -> str | None:
    """ "*.parent" for a name one label under parent, when that wildcard stays inside the
    name's registrable domain ("b1.s3.amazonaws.com" -> "*.s3.amazonaws.com", "api.openai.com"
    -> "*.openai.com"); None where it would not ("openai.com" -> "*.com"), for a name with no
    registrable domain ("db.default.svc.cluster.local"), or for a pattern."""
    if "." not in name or is_pattern(name):
        return None
    try:
        return check_name_pattern("*." + name.split(".", 1)[1])
    except DomainError:
        return None


def generalise_name(known: str, name: str) -> str | None:
    """The least general pattern covering known (a name or a learned pattern) and name, or
    None when the evidence does not justify one (module docstring)."""
    if known == name or is_pattern(name):
        return None
    a, b = known.split("."), name.split(".")
    domain = registrable(name)
    if len(a) != len(b) or domain is None:
        return None
    fixed = domain.count(".") + 1
    if a[-fixed:] != b[-fixed:]:
        return None
    out: list[str] = []
    for x, y in zip(a[:-fixed], b[:-fixed], strict=True):
        if x == y:
            out.append(x)
            continue
        merged = merge_label(x, y)
        if merged is None:
            return None
        out.append(merged)
    return ".".join([*out, *b[-fixed:]])
