"""The collapse index of a baseline's path set is built on first use: whatever the order of
puts, removals and first reads, it equals the index computed from the keys present."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.policy.baseline import Baseline
from corral.policy.rules import Entry, parent_dirs
from corral.policy.sets import _PathSet

components = st.sampled_from(["a", "b", "c", "lib", "x.py", "y.py"])
paths = st.lists(components, min_size=1, max_size=4).map(lambda cs: "/" + "/".join(cs))
ops = st.lists(st.tuples(st.sampled_from(["put", "prefix", "pop", "read"]), paths), max_size=40)


def scratch(ps: _PathSet) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for key in [*ps.exact, *ps.prefixes]:
        for d, c in parent_dirs(key):
            out.setdefault(d, {})
            out[d][c] = out[d].get(c, 0) + 1
    return out


@settings(max_examples=300)
@given(ops)
def test_lazy_index_equals_the_index_of_the_keys(steps: list[tuple[str, str]]) -> None:
    ps = _PathSet()
    for op, path in steps:
        if op == "put" and path not in ps.exact:  # a baseline puts only what it lacks
            ps.put(path, Entry(1.0, 1.0), prefix=False)
        elif op == "prefix" and path + "/" not in ps.prefixes:
            ps.put(path + "/", Entry(1.0, 1.0), prefix=True)
        elif op == "pop":
            ps.pop_beneath(path.rsplit("/", 1)[0] + "/")
        elif op == "read":
            assert ps.children == scratch(ps)
    assert ps.children == scratch(ps)


@settings(max_examples=50)
@given(st.lists(paths, max_size=60))
def test_collapse_after_a_load_is_the_collapse_of_one_learning_run(ps_: list[str]) -> None:
    """A baseline loaded from its encoding (no index yet) collapses new paths exactly as the
    baseline that learned them all in one go."""
    rules = {"collapse_threshold": 2, "collapse_min_depth": 1}
    whole = Baseline.new("a", **rules)
    half = Baseline.new("a", **rules)
    cut = len(ps_) // 2
    for p in ps_[:cut]:
        whole.add("open", p, "learned", 1.0)
        half.add("open", p, "learned", 1.0)
    loaded = half.copy()
    for p in ps_[cut:]:
        whole.add("open", p, "learned", 1.0)
        loaded.add("open", p, "learned", 1.0)
    assert loaded.kernel_entries("open") == whole.kernel_entries("open")
