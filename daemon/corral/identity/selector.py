"""Which pods are agents: `PodSelector` (namespaces, excluded namespaces, and an
equality-based label selector parsed by `parse_label_selector`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .pods import PodInfo

_LABEL_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_DNS_SUBDOMAIN = r"[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?"
_LABEL_KEY = re.compile(rf"^(?:{_DNS_SUBDOMAIN}/)?{_LABEL_NAME}$")
_LABEL_VALUE = re.compile(rf"^(?:{_LABEL_NAME})?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=" | "!=" | "exists" | "!exists"
    value: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op == "=":
            return labels.get(self.key) == self.value
        return labels.get(self.key) != self.value  # "!=" matches a missing key, as in k8s


def _split_term(term: str) -> tuple[str, str, str]:
    for sep, op in (("!=", "!="), ("==", "="), ("=", "=")):
        if sep in term:
            key, _, value = term.partition(sep)
            return key.strip(), op, value.strip()
    if term.startswith("!"):
        return term[1:].strip(), "!exists", ""
    return term, "exists", ""


def _requirement(term: str) -> Requirement:
    key, op, value = _split_term(term)
    if not _LABEL_KEY.fullmatch(key):
        raise ValueError(f"{term!r}: {key!r} is not a valid label key")
    if not _LABEL_VALUE.fullmatch(value) or any(c in value for c in "=!"):
        raise ValueError(f"{term!r}: {value!r} is not a valid label value")
    return Requirement(key, op, value)


def parse_label_selector(selector: str) -> tuple[Requirement, ...]:
    """Equality-based selector: "k=v,k2!=v2,k3,!k4" (also "k==v"). "" selects everything.
    Set-based terms (k in (a,b)) are rejected with a ValueError."""
    if "(" in selector or re.search(r"\s(not)?in\s", selector):
        raise ValueError(f"{selector!r}: set-based selectors (in, notin) are not supported")
    terms = [t.strip() for t in selector.split(",")] if selector.strip() else []
    if any(not t for t in terms):
        raise ValueError(f"{selector!r}: empty term")
    return tuple(_requirement(t) for t in terms)


def _names(v: Any) -> tuple[str, ...]:
    """A config list of names; a "a,b" string is accepted too."""
    if isinstance(v, str):
        v = v.split(",")
    return tuple(str(x).strip() for x in (v or ()) if str(x).strip())


@dataclass(frozen=True)
class PodSelector:
    """Which pods are agents. namespaces empty = all."""

    namespaces: tuple[str, ...] = ()
    exclude_namespaces: tuple[str, ...] = ("kube-system",)
    label_selector: str = ""
    _requirements: tuple[Requirement, ...] = field(default=(), init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_requirements", parse_label_selector(self.label_selector))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> PodSelector:
        cfg = cfg or {}
        return cls(
            namespaces=_names(cfg.get("namespaces")),
            exclude_namespaces=_names(cfg.get("exclude_namespaces", ("kube-system",))),
            label_selector=str(cfg.get("label_selector") or ""),
        )

    def matches(self, pod: PodInfo) -> bool:
        if self.namespaces and pod.namespace not in self.namespaces:
            return False
        if pod.namespace in self.exclude_namespaces:
            return False
        return all(r.matches(pod.labels) for r in self._requirements)
