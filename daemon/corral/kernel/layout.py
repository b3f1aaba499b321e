"""Kernel/user-space layouts, derived from bpf/corral.h by cffi (ABI mode).

corral.h is the one definition of every structure shared with the BPF programs. This module
feeds it to cffi's cdef after dropping the include guard, so sizes, offsets, enum values and
#define constants all come from the header itself.
"""

from __future__ import annotations

import re
import struct
from functools import cache
from importlib import resources
from pathlib import Path

import cffi

_KERNEL_TYPES = """
typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef int __s32;
"""

_GUARD = re.compile(r"^\s*#\s*(ifndef|endif|define\s+CORRAL_H\b)")
_COMMENT = re.compile(r"/\*.*?\*/", re.S)


def header_path() -> Path:
    """corral.h as installed with the package, or from the source tree during development."""
    packaged = resources.files("corral").joinpath("bpf/corral.h")
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[3] / "bpf" / "corral.h"


def cdef_source(text: str) -> str:
    """The header as cffi's cdef accepts it: comments and the include guard removed."""
    text = _COMMENT.sub("", text)
    lines = [ln for ln in text.splitlines() if not _GUARD.match(ln)]
    return _KERNEL_TYPES + "\n".join(lines)


@cache
def ffi() -> cffi.FFI:
    f = cffi.FFI()
    f.cdef(cdef_source(header_path().read_text()))
    return f


class _Consts:
    """Attribute access to the header's #defines and enum values (e.g. C.CORRAL_PATH_MAX)."""

    def __getattr__(self, name: str) -> int:
        lib = _lib()
        return int(getattr(lib, name))


@cache
def _lib():  # type: ignore[no-untyped-def]
    # ABI mode with no shared library: dlopen(None) gives constants only, which is all we use.
    return ffi().dlopen(None)


C = _Consts()


def _enum_names(enum: str, prefix: str) -> tuple[str, ...]:
    """Enum members in value order, as users see them: CORRAL_VERDICT_WOULD_DENY -> would-deny."""
    elements: dict[int, str] = ffi().typeof(enum).elements
    return tuple(
        elements[v].removeprefix(prefix).lower().replace("_", "-") for v in sorted(elements)
    )


DIMS = _enum_names("enum corral_dim", "CORRAL_DIM_")
MODES = _enum_names("enum corral_mode", "CORRAL_MODE_")
VERDICTS = _enum_names("enum corral_verdict", "CORRAL_VERDICT_")
BACKENDS: dict[int, str] = {
    v: n.removeprefix("CORRAL_BACKEND_").lower()
    for v, n in ffi().typeof("enum corral_backend").elements.items()
}
EVENT_FLAGS: dict[int, str] = {
    v: n.removeprefix("CORRAL_EF_").lower()
    for v, n in ffi().typeof("enum corral_event_flag").elements.items()
}


# enum corral_tamper without "none": bpf, mount, chroot, ptrace, raw-socket, cgroup, bpffs, ...
TAMPER_KINDS = _enum_names("enum corral_tamper", "CORRAL_TAMPER_")[1:]
# the dim byte of a tamper-guard event: one past the dimensions (not a dimension of its own)
TAMPER_EVENT = "tamper"
# the dim byte (CORRAL_EVENT_DNS) of a DNS answer's record (struct corral_dns_event)
DNS_EVENT = "dns"
DNS_EVENT_FLAGS: dict[int, str] = {
    v: n.removeprefix("CORRAL_DNS_EF_").lower()
    for v, n in ffi().typeof("enum corral_dns_event_flag").elements.items()
}


def tamper_bits(kinds: frozenset[str] | set[str]) -> int:
    """The kernel's bitmask (1 << enum corral_tamper) of these kind names."""
    bits = 0
    for k in kinds:
        if k not in TAMPER_KINDS:
            raise ValueError(
                f"unknown tamper kind {k!r}: expected one of {', '.join(TAMPER_KINDS)}"
            )
        bits |= 1 << (TAMPER_KINDS.index(k) + 1)
    return bits


def tamper_kinds(bits: int) -> frozenset[str]:
    return frozenset(k for i, k in enumerate(TAMPER_KINDS) if bits & (1 << (i + 1)))


def dim_index(name: str) -> int:
    try:
        return DIMS.index(name)
    except ValueError:
        raise ValueError(f"unknown dimension {name!r}: expected one of {', '.join(DIMS)}") from None


def mode_index(name: str) -> int:
    try:
        return MODES.index(name)
    except ValueError:
        raise ValueError(f"unknown mode {name!r}: expected one of {', '.join(MODES)}") from None


def new(ctype: str):  # type: ignore[no-untyped-def]
    """A zeroed instance of a header struct, e.g. new("struct corral_path_key")."""
    return ffi().new(ctype + " *")


def to_bytes(obj) -> bytes:  # type: ignore[no-untyped-def]
    return bytes(ffi().buffer(obj))


def from_bytes(ctype: str, data: bytes):  # type: ignore[no-untyped-def]
    """A copy of data viewed as the header struct ctype."""
    f = ffi()
    size = f.sizeof(ctype)
    if len(data) < size:
        raise ValueError(f"{ctype}: need {size} bytes, got {len(data)}")
    obj = f.new(ctype + " *")
    f.memmove(obj, data, size)
    return obj


def sizeof(ctype: str) -> int:
    return ffi().sizeof(ctype)


def offsetof(ctype: str, field: str) -> int:
    return int(ffi().offsetof(ctype, field))


_INT_CODES = {1: "b", 2: "h", 4: "i", 8: "q"}


@cache
def unpacker(
    ctype: str, only: tuple[str, ...] | None = None
) -> tuple[struct.Struct, tuple[str, ...]]:
    """(struct.Struct, field names) reading every field of ctype in one call: the hot path's
    decoder (a cffi copy plus one attribute access per field costs several times more).
    With `only`, just those fields (in the header's order; the others are skipped as pad
    bytes): fewer Python objects per record where a reader needs a few fields.

    The format is derived here from cffi's view of the header (offsets, sizes, signedness,
    array lengths; padding as pad bytes), never written by hand. Integer fields come back as
    ints, arrays as bytes (NUL padding included)."""
    f = ffi()
    t = f.typeof(ctype)
    if only is not None:
        unknown = set(only) - {name for name, _ in t.fields}
        if unknown:
            raise KeyError(f"{ctype} has no field {sorted(unknown)[0]!r}")
    parts = ["="]  # native byte order, no implicit alignment: every gap is explicit
    names: list[str] = []
    pos = 0
    for name, field in t.fields:
        if only is not None and name not in only:
            continue
        ft = field.type
        if field.offset > pos:
            parts.append(f"{field.offset - pos}x")
        size = f.sizeof(ft)
        if ft.kind == "array":
            parts.append(f"{size}s")
        elif ft.kind in ("primitive", "enum") and size in _INT_CODES:
            signed = int(f.cast(ft, -1)) < 0
            code = _INT_CODES[size]
            parts.append(code if signed else code.upper())
        else:
            raise TypeError(f"{ctype}.{name}: {ft.cname} has no struct code")
        names.append(name)
        pos = field.offset + size
    if f.sizeof(t) > pos:
        parts.append(f"{f.sizeof(t) - pos}x")
    packer = struct.Struct("".join(parts))
    assert packer.size == f.sizeof(t), (ctype, packer.format)
    return packer, tuple(names)
