"""The API's BaselineService: read a baseline, review its deviations (`diff`, `accept`),
export it and import a document into it."""

from __future__ import annotations

import dataclasses
import errno
import time
from typing import Any

import structlog

from corral.contract import BadRequest, Conflict, validate_agent_name
from corral.kernel.layout import DIMS
from corral.kernel.loader import AllowListFull
from corral.names.domains import DomainError
from corral.names.generalise import check_name_pattern
from corral.policy import document, review
from corral.policy.agents import Agent, Deviation
from corral.policy.baseline import Baseline
from corral.policy.lineage import caller_list
from corral.policy.patterns import PatternError, kernel_groups
from corral.policy.promotion import set_gates
from corral.policy.rules import is_host_object

from .coverage import refuse_enforce
from .state import NodeState
from .sync import KernelSync

log = structlog.get_logger("corral.node")

# what accept adds (None: cannot be an allow-list entry) and the deviations it settles
_Choice = tuple[review.Selector | None, list[Deviation]]
# what a BPF map update fails with when the map has no room left
_MAP_FULL = frozenset({errno.ENOSPC, errno.E2BIG, errno.ENOMEM})


class BaselineService:
    def __init__(self, state: NodeState, sync: KernelSync) -> None:
        self.state = state
        self.sync = sync

    def get_baseline(self, name: str) -> dict[str, Any]:
        self.state.agent(name)
        return self.state.baselines[name].to_dict()

    def diff(self, name: str, flat: bool = False) -> dict[str, Any]:
        agent = self.state.agent(name)
        b = self.state.baselines[name]
        pending = review.pending(agent.deviations.values(), b)
        rows = review.rows(self._with_repeats(agent, b, pending), flat=flat)
        return {
            "agent": name,
            "modes": dict(agent.modes),
            "view": review.view(rows),
            "flat": flat,
            "deviations": len(pending),
            "rows": [r.to_dict(i) for i, r in enumerate(rows, 1)],
        }

    def _with_repeats(self, agent: Agent, b: Baseline, devs: list[Deviation]) -> list[Deviation]:
        """The deviations with the repeats the kernel suppressed since it last reported them
        (still counted only there): diff's counts are the kernel's."""
        try:
            repeats = self.sync.k.pending_repeats()
        except Exception as e:  # counts without them, and say so in the log
            log.warning("suppressed repeats not read from the kernel", error=str(e))
            return devs
        out = []
        for d in devs:
            lst = agent.lists.get(d.dimension, 0)
            if d.dimension == "exec" and d.caller in b.caller_ids and self.sync.lineage:
                lst = caller_list(lst, b.caller_ids[d.caller])
            extra = repeats.get((lst, d.object), 0)
            out.append(dataclasses.replace(d, count=d.count + extra) if extra else d)
        return out

    # ---- accept ---------------------------------------------------------------------------

    async def accept(
        self,
        name: str,
        entries: list[dict[str, Any]] | None,
        *,
        index: list[int] | None = None,
        view: str | None = None,
        flat: bool = False,
    ) -> dict[str, Any]:
        """Adds what the operator picked to the baseline (additions only: no list swap)."""
        agent = self.state.agent(name)
        b = self.state.baselines[name]
        self.prune_deviations(agent)
        pending = list(agent.deviations.values())
        if entries is None and not index:
            chosen = [(review.exact(d), [d]) for d in pending]
        else:
            chosen = self._select(name, pending, entries or [])
            chosen += self._select_rows(name, pending, index or [], view, flat)
        self._check_patterns(b, [sel for sel, _ in chosen if sel is not None])
        added: list[review.Selector] = []
        skipped: list[str] = []
        taken: set[str] = set()
        for sel, devs in chosen:
            if sel is None:
                skipped += [d.object for d in devs]
            elif self._add(b, sel):
                added.append(sel)
            taken.update(d.key for d in devs)
        for key in taken:
            agent.deviations.pop(key, None)
        self.prune_deviations(agent)
        self.state.dirty.add(name)
        self.state.registry.dirty = True
        try:
            self.sync.push_entries(agent)
        except AllowListFull as e:
            await self.state.save_all()  # the baseline keeps what was accepted: nothing is lost
            raise Conflict(
                f"the {len(added)} accepted entries are in {name}'s baseline, but not all "
                f"fit the kernel list: {e}"
            ) from None
        await self.state.save_all()
        log.info("deviations accepted", agent=name, deviations=len(taken), entries=len(added))
        return {
            "agent": name,
            "accepted": len(taken),
            "entries": [
                {"dimension": s.dimension, "object": s.object, "kind": s.kind, "widens": s.widens}
                | ({"caller": s.caller} if s.caller else {})
                for s in added
            ],
            "skipped": skipped,
            "remaining": len(agent.deviations),
        }

    @staticmethod
    def _check_patterns(b: Baseline, chosen: list[review.Selector]) -> None:
        """Refuses the whole accept, before anything changes, when its patterns and the
        baseline's would not fit the kernel's pattern entries."""
        for dim in ("exec", "open"):
            new = [s.path for s in chosen if s.pattern and s.dimension == dim]
            if new:
                try:
                    kernel_groups([*b.kernel_patterns(dim), *new])
                except PatternError as e:
                    raise Conflict(f"{dim}: {e}") from None

    @staticmethod
    def _add(b: Baseline, sel: review.Selector) -> bool:
        try:
            return b.add(
                sel.dimension,
                sel.key,
                source="accepted",
                prefix=sel.prefix,
                pattern=sel.pattern,
                caller=sel.caller,
            )
        except PatternError as e:
            raise Conflict(f"{sel.dimension} {sel.object}: {e}") from None

    def _select(
        self, name: str, pending: list[Deviation], entries: list[dict[str, Any]]
    ) -> list[_Choice]:
        out: list[_Choice] = []
        for i, e in enumerate(entries):
            dim, obj, caller = e.get("dimension"), e.get("object"), e.get("caller")
            try:
                obj = checked_name(str(dim), str(obj))
                sel = review.selector(str(dim), str(obj), None if caller is None else str(caller))
            except ValueError as err:
                raise BadRequest(f"entries[{i}] ({dim} {obj}): {err}") from None
            matched = [d for d in pending if sel.covers(d)]
            if not matched:
                raise BadRequest(
                    f"entries[{i}]: no pending deviation of {name} matches {dim} {obj} "
                    f"(see `corralctl diff {name}`; to allow something the agent has not "
                    "done, use `corralctl baseline import --merge`)"
                )
            out.append((sel, matched))
        return out

    def _select_rows(
        self, name: str, pending: list[Deviation], index: list[int], view: str | None, flat: bool
    ) -> list[_Choice]:
        if not index:
            return []
        rows = review.rows(pending, flat=flat)
        now = review.view(rows)
        if view is not None and view != now:
            raise Conflict(
                f"the deviations of {name} changed since view {view} (now {now}): "
                f"run `corralctl diff {name}` again"
            )
        out: list[_Choice] = []
        for n in index:
            if not 1 <= n <= len(rows):
                raise BadRequest(
                    f"index {n} is out of range: the diff of {name} has {len(rows)} rows"
                )
            out += [(review.exact(d), [d]) for d in rows[n - 1].deviations]
        return out

    def prune_deviations(self, agent: Agent) -> None:
        """Forgets deviations the baseline now covers (after an accept or an import)."""
        b = self.state.baselines[agent.name]
        keep = {d.key for d in review.pending(agent.deviations.values(), b)}
        for key in [k for k in agent.deviations if k not in keep]:
            del agent.deviations[key]
            self.state.registry.dirty = True

    # ---- documents ------------------------------------------------------------------------

    def export_baseline(self, name: str) -> dict[str, Any]:
        agent = self.state.agent(name)
        return document.export(
            self.state.baselines[name],
            modes=agent.modes,
            auto_promote=agent.auto_promote,
            promotion=agent.gates.get("operator"),
            tamper_allow=agent.tamper_allow,
        )

    async def import_baseline(
        self,
        name: str,
        doc: document.Document,
        *,
        strategy: document.Strategy = "merge",
        keep_modes: bool = False,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Merges or replaces the baseline with a validated document; creates (pre-seeds) the
        agent when it is unknown. Kernel rule: the new allow-lists are filled completely under
        fresh ids and switched in with one write, then modes flip; nothing changes if any
        step fails."""
        validate_agent_name(name)
        self._check_capacity(doc)
        _check_names(doc)
        state = self.state
        agent = state.registry.get(name)
        current = state.baselines.get(name)
        plan = document.plan(
            doc, current, agent=name, strategy=strategy, rules=state.rules, now=time.time()
        )
        modes = {} if keep_modes else dict(doc.modes)
        auto = None if keep_modes else doc.auto_promote
        refuse_enforce(name, state.uncovered.get(name), modes)
        result: dict[str, Any] = {
            "agent": name,
            "created": agent is None,
            "strategy": strategy,
            "digest": doc.digest,
            "dry_run": dry_run,
            "added": plan.added,
            "removed": plan.removed,
            "kept": plan.kept,
            "entries": len(plan.baseline),
        }
        if dry_run:
            before = agent.modes if agent else dict.fromkeys(DIMS, state.cfg.defaults.mode)
            result["modes"] = {**before, **modes}
            return result
        state.baselines[name] = plan.baseline
        try:
            if agent is None:
                agent = self.sync.create_agent(name, source="import", auto_promote=auto)
            else:
                self.sync.sync_agent(agent, swap=True)
        except Exception as e:
            self._undo_import(name, current, created=result["created"])
            if isinstance(e, AllowListFull) or (isinstance(e, OSError) and e.errno in _MAP_FULL):
                raise self._maps_full(name, e) from None
            raise
        tamper = None if keep_modes else doc.tamper_allow
        self._apply_imported_modes(agent, modes, auto, doc.digest, tamper)
        if doc.promotion is not None and not keep_modes:
            set_gates(agent, "operator", doc.promotion)
        self.prune_deviations(agent)
        state.dirty.add(name)
        state.registry.dirty = True
        await state.save_all()
        log.info("baseline imported", **{k: v for k, v in result.items() if k != "dry_run"})
        result["modes"] = dict(agent.modes)
        return result

    def _undo_import(self, name: str, previous: Baseline | None, *, created: bool) -> None:
        """The kernel refused the new lists: the agent keeps what it had (a new one goes)."""
        if previous is None:
            self.state.baselines.pop(name, None)
        else:
            self.state.baselines[name] = previous
        if created:
            self.sync.forget_agent(name)

    def _maps_full(self, name: str, e: Exception) -> Conflict:
        k = self.state.cfg.kernel
        return Conflict(
            f"nothing imported into {name}: a kernel allow-list map of this node is full "
            f"({e}). The maps are shared by all agents (kernel.exec_allow_entries="
            f"{k.exec_allow_entries}, open_allow_entries={k.open_allow_entries}, "
            f"net_allow_entries={k.net_allow_entries}) and an import needs room for the old "
            "and the new lists while it swaps them: raise the limit or remove entries"
        )

    def _check_capacity(self, doc: document.Document) -> None:
        k = self.state.cfg.kernel
        sizes = {
            "exec": k.exec_allow_entries,
            "open": k.open_allow_entries,
            "connect": k.net_allow_entries,
        }
        for dim, size in sizes.items():
            n = doc.count(dim)
            if n > size:
                raise BadRequest(
                    f"spec.{dim}: {n} entries; this node's {dim} allow-list holds at most "
                    f"{size} across all agents (kernel.{'net' if dim == 'connect' else dim}"
                    "_allow_entries)"
                )

    def _apply_imported_modes(
        self,
        agent: Agent,
        modes: dict[str, str],
        auto: bool | None,
        digest: str,
        tamper: set[str] | None = None,
    ) -> None:
        """After the lists are in place: flip modes and the allowed tamper kinds (tamper: the
        document's, None to keep the agent's) in one map write."""
        changed = False
        for dim, mode in modes.items():
            changed |= agent.set_mode(dim, mode, reason=f"baseline import {digest}", by="import")
        if auto is not None:
            agent.auto_promote = auto
        if tamper is not None and tamper != agent.tamper_allow:
            before, agent.tamper_allow, changed = agent.tamper_allow, set(tamper), True
            log.info(
                "tamper kinds allowed",
                agent=agent.name,
                allowed=sorted(tamper),
                added=sorted(tamper - before),
                removed=sorted(before - tamper),
                by="import",
                digest=digest,
            )
        if changed:
            self.sync.k.set_agent(agent.id, self.sync.agent_config(agent))


def checked_name(dimension: str, obj: str) -> str:
    """A connect entry by name as the name rules have it (corral.names: IDNA, no wildcard at
    or above a registrable domain); anything else unchanged. ValueError says what is wrong."""
    if dimension != "connect" or not is_host_object(obj):
        return obj
    host, _, port = obj.strip().rpartition(":")
    try:
        return f"{check_name_pattern(host)}:{port}"
    except DomainError as e:
        raise ValueError(str(e)) from None


def _check_names(doc: document.Document) -> None:
    """The document's host entries under the name rules (IDNA-normal, no wildcard at or above
    a registrable domain); every problem at once, nothing applied."""
    problems = []
    for e in doc.entries:
        if not e.host:
            continue
        name = str(e.key[0])
        try:
            if check_name_pattern(name) != name:
                problems.append(f"{e.where}: write the name as {check_name_pattern(name)}")
        except DomainError as err:
            problems.append(f"{e.where}: {err}")
    if problems:
        raise BadRequest("invalid baseline document: " + "; ".join(problems))
