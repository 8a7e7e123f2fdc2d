"""What a manifest written elsewhere may size: at most what this kernel gives by default.

A package's config and a snapshot pulled from elsewhere are written by their publisher, not
by the operator who runs them. The operator *accepts* their capabilities (declared ∩
accepted, ``core/package.py``; a foreign snapshot's recorded grants, ``--grant``/
``--accept-all``). The other fields that size what the agent may consume were never shown
for acceptance, so a foreign document may only narrow them, never widen them:

- OS ``limits`` (memory, cpu, pids, wall clock, files, disk): each at most the kernel's
  default (``[kernel.limits]``); a field the document leaves unset takes the default;
- the token ``budget``: each of ``max_input_tokens``/``max_output_tokens`` at most the
  kernel's default LLM budget (a document that sets one could otherwise lift the finite
  default an LLM root gets); ``reset_period`` is dropped (a budget that resets every second
  is no budget);
- episodic ``memory``: ``max_records`` and ``max_record_bytes`` at most the defaults.

To give a package more, the operator raises ``[kernel.limits]`` (a decision on this machine),
or writes a manifest of their own. Pure: values in, values out.
"""

from __future__ import annotations

from collections.abc import Mapping

from agentix.core.manifest import Limits, Manifest, MemoryConfig

__all__ = ["cap_foreign"]


def _at_most(v: int | None, top: int) -> int:
    return top if v is None else min(v, top)


def cap_foreign(manifest: Manifest, limits: Limits, llm_budget: Mapping[str, int]) -> Manifest:
    """``manifest`` (parsed from a package or a foreign snapshot) with every sizing field at
    most this kernel's default: ``limits`` (the kernel's [kernel.limits]) and ``llm_budget``
    (its default token budget for an LLM root)."""
    b = manifest.budget
    budget = b.model_copy(update={
        **{key: _at_most(getattr(b, key), top) for key, top in llm_budget.items()},
        "reset_period": None})
    dm, m = MemoryConfig(), manifest.memory
    memory = m.model_copy(update={"max_records": min(m.max_records, dm.max_records),
                                  "max_record_bytes": min(m.max_record_bytes, dm.max_record_bytes)})
    return manifest.model_copy(update={"limits": manifest.limits.capped_by(limits), "budget": budget,
                                       "memory": memory})
