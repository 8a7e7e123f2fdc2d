"""memory_store, memory_query, memory_delete: an agent's private episodic memory.

The owner of every record is derived by the kernel from the calling agent — never taken
from the arguments — so an agent can only see, replace and delete its own memories.
By default the owner is ``agent:<agent_id>``. An agent whose manifest sets
``memory.shared_identity`` (opt-in cross-run memory, used by the orchestrator) owns
``identity:<name>`` instead; ``owner_of`` decides whether that is allowed (the default
allows it only for agents the operator spawned, i.e. roots, so a child cannot borrow an
identity).

Register with ``make_specs(store)``; the handlers run the store in a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from agentix.core.errors import CapabilityDenied, InvalidRequest
from agentix.memory.store import CATEGORIES, MAX_K, MemoryStore
from agentix.tools.base import ToolContext, ToolSpec
from agentix.tools.thread_work import commit_point, in_thread

__all__ = ["default_owner", "make_specs"]


def default_owner(ctx: ToolContext) -> tuple[str, int | None]:
    """(owner key, the agent's own record cap) for the calling agent."""
    if ctx.agent_id is None:
        raise InvalidRequest("memory tools act for an agent; name it with \"agent_id\"", field="agent_id")
    rec = ctx.agent
    mem = rec.manifest.memory if rec is not None else None
    cap = mem.max_records if mem is not None else None
    ident = mem.shared_identity if mem is not None else None
    if ident:
        if rec is not None and rec.parent is not None:
            raise CapabilityDenied("memory.shared_identity is only honoured for agents the operator "
                                   "spawns (a child cannot borrow an identity)", reason="shared_identity")
        return f"identity:{ident}", cap
    return f"agent:{ctx.agent_id}", cap


def _context_labels(ctx: ToolContext) -> set[str]:
    """The labels of the context a call acts in: the call's and its agent's."""
    return set(ctx.call.taint) | (set(ctx.agent.taint) if ctx.agent is not None else set())


def make_specs(store: MemoryStore,
               owner_of: Callable[[ToolContext], tuple[str, int | None]] = default_owner) -> list[ToolSpec]:
    async def memory_store(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        owner, cap = owner_of(ctx)
        labels = _context_labels(ctx)  # the record is as tainted as the context that stores it

        def write() -> dict[str, Any]:
            content = args["content"]
            # the embedding (a model; with an API embedder a network round trip) changes nothing:
            # it runs before the commit point, so a call ended meanwhile stores nothing
            vec = store.embedder.embed_passages([content])[0] if isinstance(content, str) else None
            commit_point()  # its call is still there (tools/thread_work.py)
            return store.store(owner, content, args.get("category", "fact"), embedding=vec,
                               metadata=args.get("metadata"), replaces=args.get("replaces"), max_records=cap,
                               taint=labels)

        rec = await in_thread(write)
        return {"id": rec["id"], "category": rec["category"], "replaced": rec["replaced"], "taint": rec["taint"]}

    async def memory_query(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        owner, _ = owner_of(ctx)
        hits = await asyncio.to_thread(
            store.query, owner, args["query"], int(args.get("k", 5)), category=args.get("category"),
            min_score=args.get("min_score"))
        # what it returns labels the reader (a later run of a shared identity included), as
        # agent.state_load does: memory never launders a label
        labels = {x for h in hits for x in h["taint"]}
        if labels:
            ctx.call.taint |= labels
            if ctx.agent is not None:
                ctx.agent.taint |= labels
        return {"memories": hits}

    async def memory_delete(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        owner, _ = owner_of(ctx)
        def delete() -> dict[str, Any]:
            commit_point()
            return store.delete(owner, args["id"])

        return await in_thread(delete)

    cat = {"type": "string", "enum": list(CATEGORIES)}
    return [
        ToolSpec("memory_store",
                 "Store a memory (fact, observation, decision or preference) for later runs of this "
                 "agent. To update one, pass its id as `replaces` (swapped atomically).",
                 {"type": "object", "properties": {
                     "content": {"type": "string", "minLength": 1},
                     "category": cat,
                     "metadata": {"type": "object"},
                     "replaces": {"type": "string"}},
                  "required": ["content"], "additionalProperties": False}, memory_store),
        ToolSpec("memory_query", "Semantic search over this agent's own memories; best matches first.",
                 {"type": "object", "properties": {
                     "query": {"type": "string", "minLength": 1},
                     "k": {"type": "integer", "minimum": 1, "maximum": MAX_K},
                     "category": cat,
                     "min_score": {"type": "number"}},
                  "required": ["query"], "additionalProperties": False}, memory_query,
                 durability="no_effect"),
        ToolSpec("memory_delete", "Delete one of this agent's memories by id.",
                 {"type": "object", "properties": {"id": {"type": "string"}},
                  "required": ["id"], "additionalProperties": False}, memory_delete),
    ]
