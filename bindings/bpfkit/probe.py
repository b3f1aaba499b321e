"""Library and kernel feature helpers."""

from __future__ import annotations

from ._lib import VERSION, lib
from .errors import check_int


def libbpf_version() -> str:
    """Version of the loaded libbpf, e.g. ``"1.1"``."""
    return f"{VERSION[0]}.{VERSION[1]}"


def probe_prog_type(prog_type: int) -> bool:
    """Whether the running kernel can load programs of ``prog_type``."""
    ret = lib.libbpf_probe_bpf_prog_type(int(prog_type), None)
    return check_int(ret, f"probe program type {int(prog_type)}") == 1


def probe_map_type(map_type: int) -> bool:
    """Whether the running kernel can create maps of ``map_type``."""
    ret = lib.libbpf_probe_bpf_map_type(int(map_type), None)
    return check_int(ret, f"probe map type {int(map_type)}") == 1
