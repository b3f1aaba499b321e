"""A full allow-list map is an error that says which setting to raise, not a bare errno."""

from __future__ import annotations

import pytest

from corral.contract import Conflict
from corral.kernel.loader import AllowListFull, Backends, Kernel


def test_full_maps_name_the_setting_to_raise(backends: Backends) -> None:
    sizes = {"open_allow": 8, "net_allow": 8}
    with Kernel(backends, map_sizes=sizes) as k:
        assert k.allow_paths("open", 1, [f"/srv/f{i}" for i in range(8)]) == 8
        with pytest.raises(AllowListFull, match=r"open_exact is full \(8 entries") as exact:
            k.allow_paths("open", 1, [f"/srv/g{i}" for i in range(4)])
        assert "kernel.open_allow_entries" in str(exact.value)
        assert isinstance(exact.value, Conflict) and exact.value.status == 409
        with pytest.raises(AllowListFull, match=r"kernel\.open_allow_entries") as trie:
            k.allow_paths("open", 1, [], [f"/srv/d{i}/" for i in range(9)])
        assert trie.value.map_name == "open_allow"
        with pytest.raises(AllowListFull, match=r"kernel\.net_allow_entries"):
            k.allow_net(1, [(f"10.0.0.{i}", 443) for i in range(9)])
        # what fitted is still there: the error lost nothing already in the kernel
        assert k.allow_paths("open", 1, [f"/srv/f{i}" for i in range(8)]) == 8


def test_the_event_ring_takes_its_configured_size(backends: Backends) -> None:
    """kernel.ring_buffer_mib sizes the ring the programs write to and corrald maps; a pinned
    ring of another size is not adopted (the size is part of the fingerprint)."""
    with Kernel(backends, map_sizes={"events": 8 << 20}) as k:
        assert k.map("events").max_entries == 8 << 20
        with k.ring_reader() as reader:
            assert reader.read() == []
        four = Kernel(backends, map_sizes={"events": 4 << 20})
        try:
            assert four.fingerprint != k.fingerprint
            assert four.map("events").max_entries == 4 << 20
        finally:
            four.close()
