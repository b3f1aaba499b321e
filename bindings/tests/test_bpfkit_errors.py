"""The error model: BpfError carries errno, op and the libbpf log tail."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest

from bpfkit import BpfError, BpfObject


def test_verifier_rejection(bad_prog_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bpfkit")
    with BpfObject.open_file(bad_prog_path) as o, pytest.raises(BpfError) as ei:
        o.load()
    err = ei.value
    assert isinstance(err, OSError)
    assert err.errno == errno.EACCES
    assert err.op == "load object bad.bpf.o"
    assert any("invalid bpf_context access" in line for line in err.libbpf_log)
    text = str(err)
    assert text.startswith("load object bad.bpf.o: Permission denied")
    assert "invalid bpf_context access" in text
    # the same lines went to the "bpfkit" logger
    warnings = [r.getMessage() for r in caplog.records if r.name == "bpfkit"]
    assert any("failed to load" in m for m in warnings)


def test_open_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.bpf.o"
    with pytest.raises(BpfError) as ei:
        BpfObject.open_file(missing)
    assert ei.value.errno == errno.ENOENT
    assert ei.value.op == "open object nope.bpf.o"
    assert "No such file or directory" in str(ei.value)


def test_open_garbage_mem() -> None:
    with pytest.raises(BpfError) as ei:
        BpfObject.open_mem(b"not an ELF file at all", "garbage")
    assert ei.value.errno != 0
    assert "garbage" in ei.value.op


def test_error_is_picklable() -> None:
    import pickle

    err = BpfError(errno.EPERM, "do something", ["libbpf: line"])
    copy = pickle.loads(pickle.dumps(err))
    assert copy.errno == errno.EPERM
    assert (copy.op, copy.libbpf_log) == ("do something", ("libbpf: line",))
