"""DNS names as corral holds them.

A name is normalised once, where it enters (a DNS answer, `accept --connect`, an imported
document): lower case, no trailing dot, internationalised labels as their ASCII form
("bücher.example" is "xn--bcher-kva.example"), 1-63 bytes per label, at most 253 in all, and
only letters, digits, ``-`` and ``_`` in a label (``_`` for service names such as
``_mcp._tcp.example.com``). Anything else is refused with a message that says why: a name is
shown to operators and compared in the kernel, so it has one spelling.

The registrable domain (``openai.com`` for ``api.openai.com``, ``foo.co.uk`` for
``a.foo.co.uk``) comes from the Public Suffix List's ICANN section, through tldextract with the
snapshot it bundles (never fetched at run time: a node may have no route to the internet, and
the answer must not change under a running baseline). The private section is left out on
purpose: there ``s3.amazonaws.com`` is a suffix, so each bucket would be a registrable domain
of its own and the evidence of many buckets could never collapse to ``*.s3.amazonaws.com``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

import tldextract

NAME_MAX = 253
LABEL_MAX = 63
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")

_EXTRACT = tldextract.TLDExtract(
    suffix_list_urls=(), cache_dir=None, include_psl_private_domains=False
)


class DomainError(ValueError):
    """A name corral cannot hold; the message says why."""


def normalise(name: str) -> str:
    """name in its one spelling (module docstring), or DomainError."""
    text = name.strip().rstrip(".").lower()
    if not text:
        raise DomainError(f"{name!r}: empty name")
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError as e:
            raise DomainError(f"{name!r}: not a valid internationalised name ({e})") from None
    if len(text) > NAME_MAX:
        raise DomainError(f"{name!r}: {len(text)} bytes, a DNS name has at most {NAME_MAX}")
    for label in text.split("."):
        if not _LABEL.fullmatch(label):
            raise DomainError(
                f"{name!r}: label {label!r} is not 1-{LABEL_MAX} letters, digits, '-' or '_'"
            )
    return text


@lru_cache(maxsize=4096)
def registrable(name: str) -> str | None:
    """The registrable domain of a normalised name (ICANN section of the PSL), None when it
    has none: a bare public suffix ("co.uk"), a single label, or a name under a suffix the
    list does not know ("x.svc.cluster.local", "printer.lan")."""
    found = _EXTRACT(name)
    domain = found.top_domain_under_public_suffix
    return domain or None


def strip_search(name: str, search: Iterable[str] = ()) -> str:
    """The name a resolver was asked for before search-domain expansion.

    With `search` (a pod's resolv.conf list, normalised), a name that is <X>.<entry> where X
    has a registrable domain is X ("api.openai.com.default.svc.cluster.local" -> "api.openai.com"
    with the search list of namespace default). Without the list, Kubernetes' own expansions
    are recognised: X.<ns>.svc.cluster.local, X.svc.cluster.local and X.cluster.local, tried in
    that order (an X ending in a two-label suffix such as "foo.co.uk" is ambiguous there: pass
    the search list). In-cluster names ("db.default.svc.cluster.local") and all else stay."""
    for entry in search:
        rest = name.removesuffix("." + entry)
        if rest != name and "." in rest and registrable(rest):
            return rest
    for candidate in _cluster_candidates(name):
        if "." in candidate and registrable(candidate):
            return candidate
    return name


def _cluster_candidates(name: str) -> list[str]:
    if name.endswith(".svc.cluster.local"):
        rest = name.removesuffix(".svc.cluster.local")
        return [rest.rpartition(".")[0], rest]
    if name.endswith(".cluster.local"):
        return [name.removesuffix(".cluster.local")]
    return []
