"""bpfkit: a small typed ctypes binding over the system libbpf (>= 1.1).

libbpf's own log output is routed to the stdlib logger ``"bpfkit"``.
"""

from .constants import (
    BPF_ANY,
    BPF_EXIST,
    BPF_F_LOCK,
    BPF_NOEXIST,
    PERCPU_MAP_TYPES,
    AttachType,
    MapType,
    ProgType,
)
from .errors import BpfError
from .link import Link, LinkInfo
from .maps import Map, bpf_obj_get, bpf_obj_pin, num_possible_cpus
from .object import BpfObject, Program
from .probe import libbpf_version, probe_map_type, probe_prog_type
from .ringbuf import RingBuffer, RingReader, record_span

__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_F_LOCK",
    "BPF_NOEXIST",
    "PERCPU_MAP_TYPES",
    "AttachType",
    "BpfError",
    "BpfObject",
    "Link",
    "LinkInfo",
    "Map",
    "MapType",
    "ProgType",
    "Program",
    "RingBuffer",
    "RingReader",
    "bpf_obj_get",
    "bpf_obj_pin",
    "libbpf_version",
    "num_possible_cpus",
    "probe_map_type",
    "probe_prog_type",
    "record_span",
]
