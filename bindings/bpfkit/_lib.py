"""Loading of the system libbpf, function prototypes and libbpf log routing.

Everything in here is private to bpfkit. Every libbpf function used by the
package is declared with explicit ``argtypes``/``restype``; functions returning
pointers use ``c_void_p`` so 64-bit addresses are never truncated.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import itertools
import logging
import threading
from typing import Any

logger = logging.getLogger("bpfkit")

MIN_LIBBPF_VERSION = (1, 1)

_INSTALL_HINT = "install libbpf1 (Debian/Ubuntu) or libbpf (Fedora)"

c_int = ctypes.c_int
c_uint = ctypes.c_uint32
c_u64 = ctypes.c_uint64
c_size_t = ctypes.c_size_t
c_bool = ctypes.c_bool
c_char_p = ctypes.c_char_p
c_void_p = ctypes.c_void_p
c_uint_p = ctypes.POINTER(ctypes.c_uint32)

# int (*libbpf_print_fn_t)(enum libbpf_print_level level, const char *fmt, va_list ap)
PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
# int (*ring_buffer_sample_fn)(void *ctx, void *data, size_t size)
RINGBUF_SAMPLE_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)


def _load_libbpf() -> ctypes.CDLL:
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise ImportError(f"bpfkit: cannot load libbpf ({name}): {exc}; {_INSTALL_HINT}") from exc


lib = _load_libbpf()
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

# (name, restype, argtypes)
_PROTOTYPES: list[tuple[str, Any, list[Any]]] = [
    # library
    ("libbpf_major_version", c_uint, []),
    ("libbpf_minor_version", c_uint, []),
    ("libbpf_set_print", c_void_p, [PRINT_FN]),
    ("libbpf_strerror", c_int, [c_int, c_char_p, c_size_t]),
    ("libbpf_num_possible_cpus", c_int, []),
    ("libbpf_probe_bpf_prog_type", c_int, [c_int, c_void_p]),
    ("libbpf_probe_bpf_map_type", c_int, [c_int, c_void_p]),
    # object
    ("bpf_object__open_file", c_void_p, [c_char_p, c_void_p]),
    ("bpf_object__open_mem", c_void_p, [c_void_p, c_size_t, c_void_p]),
    ("bpf_object__load", c_int, [c_void_p]),
    ("bpf_object__close", None, [c_void_p]),
    ("bpf_object__name", c_char_p, [c_void_p]),
    ("bpf_object__next_program", c_void_p, [c_void_p, c_void_p]),
    ("bpf_object__next_map", c_void_p, [c_void_p, c_void_p]),
    # program
    ("bpf_program__name", c_char_p, [c_void_p]),
    ("bpf_program__section_name", c_char_p, [c_void_p]),
    ("bpf_program__autoload", c_bool, [c_void_p]),
    ("bpf_program__set_autoload", c_int, [c_void_p, c_bool]),
    ("bpf_program__fd", c_int, [c_void_p]),
    ("bpf_program__type", c_int, [c_void_p]),
    ("bpf_program__expected_attach_type", c_int, [c_void_p]),
    ("bpf_program__attach", c_void_p, [c_void_p]),
    ("bpf_program__attach_cgroup", c_void_p, [c_void_p, c_int]),
    # link
    ("bpf_link__open", c_void_p, [c_char_p]),
    ("bpf_link__fd", c_int, [c_void_p]),
    ("bpf_link__pin_path", c_char_p, [c_void_p]),
    ("bpf_link__pin", c_int, [c_void_p, c_char_p]),
    ("bpf_link__unpin", c_int, [c_void_p]),
    ("bpf_link__disconnect", None, [c_void_p]),
    ("bpf_link__destroy", c_int, [c_void_p]),
    # map (libbpf object level)
    ("bpf_map__name", c_char_p, [c_void_p]),
    ("bpf_map__fd", c_int, [c_void_p]),
    ("bpf_map__type", c_int, [c_void_p]),
    ("bpf_map__key_size", c_uint, [c_void_p]),
    ("bpf_map__value_size", c_uint, [c_void_p]),
    ("bpf_map__max_entries", c_uint, [c_void_p]),
    ("bpf_map__set_max_entries", c_int, [c_void_p, c_uint]),
    ("bpf_map__map_flags", c_uint, [c_void_p]),
    ("bpf_map__set_pin_path", c_int, [c_void_p, c_char_p]),
    ("bpf_map__pin_path", c_char_p, [c_void_p]),
    ("bpf_map__reuse_fd", c_int, [c_void_p, c_int]),
    ("bpf_map__pin", c_int, [c_void_p, c_char_p]),
    ("bpf_map__unpin", c_int, [c_void_p, c_char_p]),
    # low-level fd API
    ("bpf_map_lookup_elem", c_int, [c_int, c_void_p, c_void_p]),
    ("bpf_map_update_elem", c_int, [c_int, c_void_p, c_void_p, c_u64]),
    ("bpf_map_delete_elem", c_int, [c_int, c_void_p]),
    ("bpf_map_get_next_key", c_int, [c_int, c_void_p, c_void_p]),
    ("bpf_map_update_batch", c_int, [c_int, c_void_p, c_void_p, c_uint_p, c_void_p]),
    ("bpf_map_delete_batch", c_int, [c_int, c_void_p, c_uint_p, c_void_p]),
    ("bpf_obj_get", c_int, [c_char_p]),
    ("bpf_obj_pin", c_int, [c_int, c_char_p]),
    ("bpf_obj_get_info_by_fd", c_int, [c_int, c_void_p, c_uint_p]),
    ("bpf_link_detach", c_int, [c_int]),
    ("bpf_prog_test_run_opts", c_int, [c_int, c_void_p]),
    # ring buffer
    ("ring_buffer__new", c_void_p, [c_int, RINGBUF_SAMPLE_FN, c_void_p, c_void_p]),
    ("ring_buffer__free", None, [c_void_p]),
    ("ring_buffer__poll", c_int, [c_void_p, c_int]),
    ("ring_buffer__consume", c_int, [c_void_p]),
    ("ring_buffer__epoll_fd", c_int, [c_void_p]),
]


def _declare() -> None:
    missing = []
    for name, restype, argtypes in _PROTOTYPES:
        try:
            fn = getattr(lib, name)
        except AttributeError:
            missing.append(name)
            continue
        fn.restype = restype
        fn.argtypes = argtypes
    if missing:
        raise ImportError(
            f"bpfkit: libbpf lacks {', '.join(missing)}; libbpf >= "
            f"{MIN_LIBBPF_VERSION[0]}.{MIN_LIBBPF_VERSION[1]} is required ({_INSTALL_HINT})"
        )
    libc.vsnprintf.restype = c_int
    libc.vsnprintf.argtypes = [c_void_p, c_size_t, c_char_p, c_void_p]


def _check_version() -> tuple[int, int]:
    try:
        version = (int(lib.libbpf_major_version()), int(lib.libbpf_minor_version()))
    except AttributeError:  # libbpf < 0.6 has no version functions at all
        version = (0, 0)
    if version < MIN_LIBBPF_VERSION:
        raise ImportError(
            f"bpfkit: libbpf {version[0]}.{version[1]} is too old, need >= "
            f"{MIN_LIBBPF_VERSION[0]}.{MIN_LIBBPF_VERSION[1]} ({_INSTALL_HINT})"
        )
    return version


VERSION = _check_version()
_declare()


# --------------------------------------------------------------------------- log routing

LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2
_LEVELS = {LIBBPF_WARN: logging.WARNING, LIBBPF_INFO: logging.INFO, LIBBPF_DEBUG: logging.DEBUG}
_FORMAT_BUF_SIZE = 64 * 1024


class LogTail:
    """Bounded buffer of the most recent libbpf WARN/INFO lines.

    Each line carries a sequence number so that an operation can ask for the
    lines printed since it started (``mark()`` before, ``since(mark)`` after).
    """

    def __init__(self, maxlen: int = 50) -> None:
        self._lines: collections.deque[tuple[int, str]] = collections.deque(maxlen=maxlen)
        self._seq = itertools.count(1)
        self._last = 0

    def add(self, line: str) -> None:
        seq = next(self._seq)
        self._lines.append((seq, line))
        self._last = seq

    def mark(self) -> int:
        return self._last

    def since(self, mark: int) -> list[str]:
        return [line for seq, line in list(self._lines) if seq > mark]

    def tail(self, n: int = 50) -> list[str]:
        return [line for _, line in list(self._lines)[-n:]]


log_tail = LogTail()
_tls = threading.local()


def _format_buffer() -> ctypes.Array[ctypes.c_char]:
    buf = getattr(_tls, "buf", None)
    if buf is None:
        buf = ctypes.create_string_buffer(_FORMAT_BUF_SIZE)
        _tls.buf = buf
    return buf


def _format(fmt: bytes, ap: int | None) -> str:
    buf = _format_buffer()
    # va_list decays to a pointer when passed as an argument (x86_64, aarch64), so the
    # pointer we received can be handed straight back to vsnprintf. It can only be consumed
    # once, hence a single large buffer and no retry on truncation.
    n = libc.vsnprintf(buf, len(buf), fmt, ap)
    text = buf.value.decode("utf-8", "replace")
    if n >= len(buf):
        text += " [truncated]"
    return text


def _print_cb(level: int, fmt: bytes | None, ap: int | None) -> int:
    try:
        py_level = _LEVELS.get(level, logging.DEBUG)
        if fmt is None:
            return 0
        if py_level == logging.DEBUG and not logger.isEnabledFor(logging.DEBUG):
            return 0
        text = _format(fmt, ap).rstrip("\n")
        for line in text.splitlines():
            if py_level > logging.DEBUG:
                log_tail.add(line)
            logger.log(py_level, "%s", line)
    except Exception:  # never let an exception unwind into C
        return 0
    return 0


_PRINT_CALLBACK = PRINT_FN(_print_cb)  # module global: must outlive every libbpf call
lib.libbpf_set_print(_PRINT_CALLBACK)


def strerror(err: int) -> str:
    """Describe a positive errno, including libbpf's own error codes and ENOTSUPP."""
    if err == 524:
        return "Operation not supported (ENOTSUPP)"
    buf = ctypes.create_string_buffer(256)
    if lib.libbpf_strerror(err, buf, len(buf)) < 0 or not buf.value:
        return f"Unknown error {err}"
    return buf.value.decode("utf-8", "replace")
