"""The kernel's snapshot methods (operator only). See docs/packages.md, "Snapshots".
(Over 400 lines: the three snapshot methods share one freeze/walk/restore path; each refusal
path is part of it.)

    snapshot.create {agent, tag?}                     freeze, write a snapshot, resume
    snapshot.restore {ref, grants?, name?, accept_all?, reissue_invocations?}   a NEW agent from a snapshot
    snapshot.fork {agent, grants?, name?, tag?}      snapshot + restore under narrower grants

Policies are rows of the method table (``kernel/methods.py``): operator methods, recorded,
durability ``effect`` (they write the local store, start processes).

What a snapshot holds (``capture``): the workspace (one reproducible layer, read through the
kernel's safe walker, ``walk_workspace`` = ``sandbox/safewalk.walk``: fd-relative, no link
followed, special and hard-linked files skipped and named, bounded), the manifest it runs (program as boot runs
it), its grants as grant groups (strings, invocations left, absolute expiry — never token
bytes), its taint labels, its saved state (``agent.state_save``: for persistent LLM agents
this is the conversation) with each value's labels, its memory records, the messages
pending in its mailbox (without their send times), its effective budget limits and what it
spent. Same state, same digest: no time, agent id or listing order enters the content.

Freezing: a running agent is paused (cgroup freezer, ``Control.pause``) while it is read and
resumed afterwards, whatever happens; a paused agent stays paused. Only live agents are
snapshotted (an exited agent's tokens are revoked: it has no grants left to record).

Restore (``restore``): the restored manifest keeps only what a package's may set, plus the
approvals it must ask and its memory limits (never isolation, lifecycle, priority or a shared
memory identity: ``_restorable``); the snapshot's blobs are verified against their digests before
anything is written; the grants are narrowed (``core.snapshot_rules.narrow_groups``: the operator
may pass ``grants``, never wider than recorded) before anything is written; the workspace is
unpacked by the package unpacker (links, devices, '..', bombs refused); the new agent gets a
new id, a name that has neither a live agent nor saved state (``NAME``, ``NAME-2``, …), tokens
minted from root for the narrowed groups (expired groups dropped; a limited group gets only the
invocations earlier restores of the same snapshot left, ``store/snapshot_given.py``, unless the
operator passes ``reissue_invocations``, which the audit records), the taint labels, the
budget spent charged to its ledger, its saved state, memory and pending messages — all put
back before its process starts. A failed restore removes what it wrote. A snapshot pulled
from a registry passed the trust policy at pull (``package.pull``); one made here is this
kernel's own. Fork checks the narrowing first, so a fork asking for more than the agent
holds leaves nothing: no snapshot, no agent.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from agentix.core.budget import Usage
from agentix.core.errors import InvalidRequest, LimitExceeded, StateError
from agentix.core.foreign import cap_foreign
from agentix.core.manifest import parse_manifest
from agentix.core.package import Ref, check_digest, parse_ref
from agentix.core.snapshot_rules import (SNAPSHOT_API, GrantGroup, limited, manifest_capabilities, narrow_groups,
                                         narrow_indexed, ration)
from agentix.kernel.cap_service import CapabilityService
from agentix.kernel.config import KernelConfig
from agentix.kernel.control import Control
from agentix.kernel.dispatch import Call, Pipeline, naming_params
from agentix.kernel.messaging import envelope_size
from agentix.kernel.methods import method
from agentix.kernel.persistent import state_identity
from agentix.kernel.process import AgentRecord, ProcessTable
from agentix.kernel.spawn import Spawner
from agentix.memory.store import MemoryStore
from agentix.packages.layout import MANIFEST_TYPE, Descriptor
from agentix.packages.service import PackageStore
from agentix.packages.snapshot import (SNAPSHOT_VERSION, read_snapshot, read_workspace, unpack_snapshot,
                                       write_snapshot)
from agentix.sandbox import safewalk
from agentix.store import snapshot_given, snapshots_made
from agentix.store.db import Database
from agentix.store.saved_state import StateStore
from agentix.tools.thread_work import in_thread, locked_in_thread

__all__ = ["METHODS", "capture", "grant_groups", "register", "walk_workspace"]

METHODS = ("snapshot.create", "snapshot.restore", "snapshot.fork")
_BUDGET_FIELDS = ("max_input_tokens", "max_output_tokens", "max_cost_usd", "max_wall_clock", "max_children",
                  "max_tool_calls", "warn_at", "reset_period")


# ---------------------------------------------------------------------------- capture
def walk_workspace(workspace: Path, skipped: list[str], max_bytes: int, max_entries: int) -> Iterator[Any]:
    """The agent's workspace through the safe walker (``packages/snapshot.Walker``): what it
    skips (links, FIFOs, sockets, devices, hard-linked files, entries swapped mid-walk) is
    appended to ``skipped``; a bound passed is ``limit_exceeded``, anything else about the
    tree ``invalid_request``. Nothing is ever resolved by path below ``workspace``."""
    try:
        root = safewalk.open_dir(workspace, follow=False)
    except safewalk.WalkError as err:
        raise InvalidRequest(f"the workspace cannot be read: {err.why}", field="workspace") from None
    try:
        yield from safewalk.walk(root, bounds=safewalk.Bounds(max_bytes=max_bytes, max_entries=max_entries,
                                                              max_depth=64),
                                 special="skip", skipped=skipped)
    except safewalk.WalkError as err:
        if err.bound is not None:
            raise LimitExceeded(f"the workspace is too large to snapshot: {err}", limit=err.bound,
                                path=err.path) from None
        raise InvalidRequest(f"the workspace cannot be snapshotted: {err}", field="workspace",
                             path=err.path) from None
    finally:
        os.close(root)


def grant_groups(caps: CapabilityService, rec: AgentRecord) -> list[GrantGroup]:
    """The agent's live tokens as grant groups (sorted: the order tokens were minted in does
    not change the digest)."""
    out = {}
    for t in caps.live_tokens(rec.agent_id):
        g = GrantGroup(tuple(t.grants.strings()), caps.ledger.remaining(t), t.expires_at)
        out[orjson.dumps(g.to_data(), option=orjson.OPT_SORT_KEYS)] = g
    return [out[key] for key in sorted(out)]


def _program_target(rec: AgentRecord) -> str:
    """The program as boot runs it inside the workspace (what a restore seeds)."""
    program = rec.manifest.program or ""
    if program.startswith("module:"):
        return program
    parts = [p for p in program.split("/") if p not in ("", ".")]
    if not program.startswith("/") and parts and ".." not in parts and (rec.workspace / program).exists():
        return "/".join(parts)  # a package's program: a path inside the unpacked tree
    return parts[-1] if parts else program


def _memory_owner(rec: AgentRecord) -> str | None:
    """The memory owner the agent writes as, or None when it shares an identity's memory
    (``memory.shared_identity``: that memory outlives agents; a snapshot does not copy it)."""
    ident = rec.manifest.memory.shared_identity
    if ident and rec.parent is None:
        return None
    return f"agent:{rec.agent_id}"


def _capture_store(state_store: StateStore, memory_store: MemoryStore,
                   rec: AgentRecord) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Saved state and memory records (blocking: run in a thread)."""
    state = state_store.entries(state_identity(rec))
    owner = _memory_owner(rec)
    memory = memory_store.export(owner) if owner is not None else []
    return state, memory


def capture(caps: CapabilityService, rec: AgentRecord, state: list[Any], memory: list[Any], skipped: list[str]) -> dict[str, Any]:
    """The snapshot document of a frozen agent (everything but the workspace layer)."""
    now = caps.clock.monotonic()
    manifest = rec.manifest.to_data()
    manifest["program"] = _program_target(rec)
    manifest.pop("capabilities", None)  # the grant groups below are what a restore mints
    budget = rec.budget
    limits = {f: getattr(budget.limits, f) for f in _BUDGET_FIELDS} if budget is not None else {}
    spent: dict[str, Any] = {}
    if budget is not None:
        b = budget.snapshot(now)  # this period's counters, as `status` shows them
        spent = {**b["used"], "tool_calls": b["tool_calls"], "children": b["children"]}
    return {
        "apiVersion": SNAPSHOT_API,
        "kind": "snapshot",
        "metadata": {"name": rec.manifest.name, "agent": rec.name, "version": SNAPSHOT_VERSION},
        "manifest": manifest,
        "grants": [g.to_data() for g in grant_groups(caps, rec)],
        "taint": sorted(rec.taint),
        "state": state,
        "memory": memory,
        "mailbox": [{"from": e.get("from"), "from_name": e.get("from_name"), "message": e.get("message"),
                     "taint": sorted(e.get("taint", ()))} for e in rec.mailbox.peek()],
        "budget": {"limits": {f: v for f, v in limits.items() if v is not None}, "spent": spent},
        "workspace": {"skipped": skipped},
    }


def _restorable(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest fields a snapshot may set for the agent it restores: what an Agentfile can
    set (as for a package), the approvals it must ask (constraints only accumulate) and its
    memory limits. Never its isolation, lifecycle or priority, nor a shared memory identity,
    whoever made or signed the snapshot: the restored agent runs under this kernel's
    isolation, on demand, with its own memory."""
    from agentix.packages.service import PACKAGE_MANIFEST_FIELDS

    out = {k: v for k, v in manifest.items() if k in PACKAGE_MANIFEST_FIELDS or k == "approval_required"}
    mem = manifest.get("memory")
    if isinstance(mem, dict):
        out["memory"] = {k: v for k, v in mem.items() if k != "shared_identity"}
    return out


def _default_ref(rec: AgentRecord, digest: str) -> Ref:
    name = "".join(c if c.isalnum() and c.isascii() else "-" for c in rec.name.lower()).strip("-") or "agent"
    try:
        return parse_ref(f"snapshots/{name}:snap-{digest[7:19]}")
    except InvalidRequest:
        return parse_ref(f"snapshots/agent:snap-{digest[7:19]}")


# ---------------------------------------------------------------------------- register
def register(pipeline: Pipeline, *, table: ProcessTable, control: Control, spawner: Spawner,
             caps: CapabilityService, state_store: StateStore, memory: MemoryStore, store: PackageStore,
             lock: asyncio.Lock, config: KernelConfig, db: Database) -> None:
    """Add the snapshot methods to ``pipeline``. Snapshots are written to the local package
    ``store`` under ``lock`` (its one writer, shared with kernel/packages_api.py); ``control``
    freezes and thaws the agent; ``caps``, ``state_store`` and ``memory`` are read for what it
    holds and written for what a restore puts back; ``spawner`` starts the restored agent;
    ``db`` records which snapshots this kernel made (``store/snapshots_made.py``; an older
    kernel's ``registry/made/`` files are imported here, once) and what restores of each
    snapshot were given (``store/snapshot_given.py``)."""
    snapshots_made.import_old(db, store.layout.root / "made")
    clock = caps.clock  # the kernel's: restored grants' expiry and the restored mail's date

    recorded = naming_params(("agent", "ref", "grants", "name"))

    def _grants_param(params: dict[str, Any]) -> list[str] | None:
        g = params.get("grants")
        if g is None:
            return None
        if not isinstance(g, list) or not all(isinstance(x, str) for x in g):
            raise InvalidRequest('"grants" must be a list of grant strings (each covered by one the agent held)',
                                 field="grants")
        return g

    async def take(rec: AgentRecord, tag: str | None) -> dict[str, Any]:
        """Freeze, read, write, resume. Returns the snapshot's ref, digest and what was new."""
        if not rec.live or rec.state == "stopping":
            raise StateError(f"agent {rec.name} ({rec.agent_id}) is {rec.state}: only a live agent can be "
                             "snapshotted", state=rec.state, agent_id=rec.agent_id)
        ref = parse_ref(tag, default_tag=None) if tag else None
        if ref is not None and ref.digest is not None:
            raise InvalidRequest("a snapshot tag is NAME:TAG, not a digest", field="tag")
        froze = rec.state == "running"
        if froze:
            await control.pause(rec)
        try:
            state, records = await asyncio.to_thread(_capture_store, state_store, memory, rec)
            async with lock:  # each step's thread ends before the lock is let go (tools/thread_work.py)
                layer, skipped = await in_thread(lambda: read_workspace(rec.workspace, store.layout, store.limits,
                                                                        walk_workspace))
                doc = capture(caps, rec, state, records, skipped)
                digest, size = await in_thread(lambda: write_snapshot(store.layout, doc, layer))
                await snapshots_made.mark(db, digest)  # durable before the snapshot is tagged
                ref = ref or _default_ref(rec, digest)
                new = await in_thread(lambda: store.layout.tag(ref, Descriptor(MANIFEST_TYPE, digest, size)))
        finally:
            if froze and rec.state == "paused":
                await control.resume(rec)
        return {"ref": str(ref), "digest": digest, "agent_id": rec.agent_id, "name": rec.name,
                "skipped": skipped, "layer": layer.digest, "size": layer.size, "new_tag": new}

    async def create(call: Call) -> dict[str, Any]:
        agent = call.params.get("agent")
        if not isinstance(agent, str):
            raise InvalidRequest('"agent" must be an agent id or live name', field="agent")
        r = await take(table.find_live(agent), _tag(call.params))
        out = {x: r[x] for x in ("ref", "digest", "agent_id", "name", "skipped", "size")}
        call.event_data = {x: r[x] for x in ("ref", "digest", "agent_id", "skipped")}
        return out

    def _free_name(base: str, explicit: bool, live: frozenset[str]) -> str:
        """``base`` or ``base-N``: a name no live agent has (``live``, taken on the event loop:
        this runs in a worker thread, which must not walk the table the loop changes) and no
        saved state is kept under. A spawn that takes it meanwhile fails the restore cleanly."""
        def taken(n: str) -> bool:
            return n in live or state_store.has_state(f"root:{n}")
        if not taken(base):
            return base
        if explicit:
            raise InvalidRequest(f"an agent named {base} is live or has saved state; restore under another "
                                 "--name", field="name", name=base)
        n = 2
        while taken(f"{base}-{n}"):
            n += 1
        return f"{base}-{n}"

    def _resolve(ref_text: str) -> tuple[Ref | None, str]:
        if ref_text.startswith("sha256:"):
            return None, check_digest(ref_text, "ref")
        ref = parse_ref(ref_text)
        return ref, store.layout.resolve(ref).digest

    async def restore_from(ref_text: str, accepted: list[str] | None, name: str | None,
                           accept_all: bool = False, reissue: bool = False) -> dict[str, Any]:
        ref, digest = await asyncio.to_thread(_resolve, ref_text)
        snap = await asyncio.to_thread(read_snapshot, store.layout, ref, digest)
        doc = snap.document
        recorded_groups = [GrantGroup.from_data(g) for g in doc["grants"]]
        # A snapshot from elsewhere (pulled) records what its publisher SAYS the agent held: like a
        # package's declared capabilities, a ceiling the operator accepts, never granted unasked;
        # and everything in it (state, mail, conversation) is another agent's data: tainted.
        foreign = not await asyncio.to_thread(snapshots_made.made, db, digest)
        if foreign and accepted is None and not accept_all:
            raise InvalidRequest(
                f"snapshot {ref or digest} was not made by this kernel: say which of its recorded grants "
                "the new agent gets (--grant G, each covered by a recorded one) or accept them all "
                "(--accept-all); recorded: " + "; ".join(", ".join(g.grants) for g in recorded_groups),
                field="grants", recorded=[g.to_data() for g in recorded_groups])
        origin = f"agent_message:snapshot {ref or digest}"
        indexed = narrow_indexed(recorded_groups, accepted)  # refused here: nothing written yet
        # the snapshot's invocation counts are handed out once (core/snapshot_rules.py): this
        # restore takes what earlier restores of the same digest left, recorded before it mints
        taken = await snapshot_given.take(db, digest, limited(indexed, clock.now()), reissue=reissue)
        try:
            groups, exhausted = ration(indexed, taken)
            caps, dropped = manifest_capabilities(groups, clock.now())
            data = _restorable(doc["manifest"])
            base = name or str(data.get("name") or doc["metadata"].get("name") or "restored")
            live = frozenset(r.name for r in table if r.live)
            data.update({"name": await asyncio.to_thread(_free_name, base, name is not None, live),
                         "capabilities": caps, "budget": dict(doc["budget"].get("limits") or {})})
            manifest = parse_manifest(data)
            if foreign:  # sized by its publisher, not this operator: at most the defaults (core/foreign.py)
                manifest = cap_foreign(manifest, config.limits, _llm_budget())
        except BaseException:
            await snapshot_given.give_back(db, digest, taken)  # refused before anything started
            raise
        dest = store.layout.tmp / f"restore-{secrets.token_hex(6)}"
        written: dict[str, Any] = {}

        async def prepare(rec: AgentRecord) -> None:
            rec.taint |= set(doc["taint"])
            if foreign:
                rec.taint.add(origin)
            for m in doc["mailbox"]:
                env = {"from": m.get("from"), "from_name": m.get("from_name"), "message": m.get("message"),
                       "sent_at": clock.now(),
                       "taint": sorted({*(m.get("taint") or []), *([origin] if foreign else [])})}
                if foreign:  # who sent it is the publisher's word: never an agent id or the operator
                    env.update({"from": None, "from_name": f"snapshot {ref or digest}",
                                "claimed_from": m.get("from"), "claimed_from_name": m.get("from_name")})
                rec.mailbox.put(env, envelope_size(env))  # the mailbox's bounds hold for restored mail too
            spent = doc["budget"].get("spent") or {}
            if rec.budget is not None and spent:
                rec.budget.used = Usage(int(spent.get("input_tokens", 0)), int(spent.get("output_tokens", 0)),
                                        float(spent.get("cost_usd", 0.0)))
                rec.budget.tool_calls = int(spent.get("tool_calls", 0))
                rec.budget.children = int(spent.get("children", 0))
            ident = state_identity(rec)
            for row in doc["state"]:
                labels = sorted({*(row.get("taint") or []), *([origin] if foreign else [])})
                written["state"] = ident  # first: a save cut short is undone too
                await in_thread(lambda: state_store.save(ident, str(row["key"]), row["value"], labels))
            owner = _memory_owner(rec)
            if owner is not None and doc["memory"]:
                written["memory"] = owner
                await in_thread(lambda: memory.import_records(owner, doc["memory"],
                                                              max_records=rec.manifest.memory.max_records,
                                                              taint=[origin] if foreign else []))

        try:
            await in_thread(lambda: unpack_snapshot(store.layout, snap, dest, store.limits))
            rec = await spawner.spawn(manifest, seed=dest, prepare=prepare)
        except BaseException:
            await asyncio.to_thread(_undo, state_store, memory, written)
            await snapshot_given.give_back(db, digest, taken)
            raise
        finally:
            await asyncio.to_thread(shutil.rmtree, dest, True)
        return {"agent_id": rec.agent_id, "name": rec.name, "pid": rec.pid, "digest": digest,
                "ref": str(ref) if ref else digest,
                "grants": [g.to_data() for g in groups], "dropped_expired": [g.to_data() for g in dropped],
                "dropped_exhausted": [g.to_data() for g in exhausted], "reissued_invocations": reissue,
                "taint": sorted(rec.taint), "isolation": rec.isolation, "made_here": not foreign}

    async def restore(call: Call) -> dict[str, Any]:
        ref_text = call.params.get("ref")
        if not isinstance(ref_text, str):
            raise InvalidRequest('"ref" must be a snapshot reference (NAME:TAG, NAME@sha256:…, or sha256:…)',
                                 field="ref")
        name = call.params.get("name")
        if name is not None and not isinstance(name, str):
            raise InvalidRequest('"name" must be an agent name', field="name")
        accept_all = call.params.get("accept_all") or False
        if not isinstance(accept_all, bool):
            raise InvalidRequest('"accept_all" must be true or false', field="accept_all")
        reissue = call.params.get("reissue_invocations") or False
        if not isinstance(reissue, bool):
            raise InvalidRequest('"reissue_invocations" must be true or false', field="reissue_invocations")
        r = await restore_from(ref_text, _grants_param(call.params), name, accept_all, reissue)
        call.event_data = {"ref": r["ref"], "digest": r["digest"], "agent_id": r["agent_id"],
                           "grants": r["grants"], "dropped_exhausted": r["dropped_exhausted"],
                           "reissued_invocations": reissue}
        return r

    async def fork(call: Call) -> dict[str, Any]:
        agent = call.params.get("agent")
        if not isinstance(agent, str):
            raise InvalidRequest('"agent" must be an agent id or live name', field="agent")
        rec = table.find_live(agent)
        accepted = _grants_param(call.params)
        narrow_groups(grant_groups(caps, rec), accepted)  # a wider fork is refused before anything is written
        name = call.params.get("name")
        if name is not None and not isinstance(name, str):
            raise InvalidRequest('"name" must be an agent name', field="name")
        snap = await take(rec, _tag(call.params))
        try:
            r = await restore_from(snap["digest"], accepted, name)
        except BaseException:
            if snap["new_tag"]:  # the fork's own snapshot goes with it; an earlier identical one stays
                def drop() -> None:
                    store.layout.untag(parse_ref(snap["ref"]))
                    store.layout.gc()

                await locked_in_thread(lock, drop)
            raise
        r["ref"] = snap["ref"]
        r["from"] = rec.agent_id
        call.event_data = {"from": rec.agent_id, "ref": snap["ref"], "digest": snap["digest"],
                           "agent_id": r["agent_id"], "grants": r["grants"],
                           "dropped_exhausted": r["dropped_exhausted"]}
        return r

    handlers = {"snapshot.create": create, "snapshot.restore": restore, "snapshot.fork": fork}
    for name_ in METHODS:
        pipeline.register(method(name_, recorded(handlers[name_]), operator=True))


def _tag(params: dict[str, Any]) -> str | None:
    tag = params.get("tag")
    if tag is not None and not isinstance(tag, str):
        raise InvalidRequest('"tag" must be NAME:TAG', field="tag")
    return tag


def _undo(state_store: StateStore, memory: MemoryStore, written: dict[str, Any]) -> None:
    """Remove what a failed restore put back (its new identity's state and memory)."""
    ident = written.get("state")
    if ident:
        state_store.delete_identity(ident)
    owner = written.get("memory")
    if owner:
        memory.delete_owner(owner)



def _llm_budget() -> dict[str, int]:
    """The kernel's default token budget for an LLM root (the ceiling of a foreign manifest's)."""
    from agentix.kernel.cap_grants import DEFAULT_LLM_BUDGET

    return DEFAULT_LLM_BUDGET
