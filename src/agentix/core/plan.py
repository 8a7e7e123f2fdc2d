"""Plans of the goal orchestrator (pure): subtasks with dependencies, validated, in waves.

A plan is a list of subtasks ``{id, goal, role?, capabilities?, depends_on?,
system_prompt?}``. Rules:

* ids are unique, 1-40 characters of lowercase letters, digits, ``-`` and ``_``;
* every ``depends_on`` names a subtask of the plan (an unknown id is an error naming it);
* the dependency graph has no cycle (a cycle is an error naming its members in order);
* at most ``MAX_SUBTASKS`` subtasks.

``waves`` orders the subtasks into layers: every subtask of a wave depends only on
subtasks of earlier waves, so the subtasks of one wave can run concurrently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from agentix.core.errors import InvalidRequest

__all__ = ["MAX_SUBTASKS", "Plan", "Subtask", "find_cycle", "parse_plan", "waves"]

MAX_SUBTASKS = 32
ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}\Z")


@dataclass(frozen=True)
class Subtask:
    id: str
    goal: str
    role: str = "worker"
    capabilities: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    system_prompt: str | None = None


@dataclass(frozen=True)
class Plan:
    subtasks: tuple[Subtask, ...]

    def get(self, sid: str) -> Subtask:
        for s in self.subtasks:
            if s.id == sid:
                return s
        raise KeyError(sid)


def _strs(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise InvalidRequest(f"plan: {field} must be a list of strings", field=field)
    return tuple(value)


def _subtask(i: int, d: Any) -> Subtask:
    if not isinstance(d, dict):
        raise InvalidRequest(f"plan: subtask #{i} must be an object", field=f"subtasks.{i}")
    sid = d.get("id")
    if not isinstance(sid, str) or not ID_RE.match(sid):
        raise InvalidRequest(f"plan: subtask #{i} needs an id of 1-40 lowercase letters, digits, '-' or '_'",
                             field=f"subtasks.{i}.id")
    goal = d.get("goal")
    if not isinstance(goal, str) or not goal.strip():
        raise InvalidRequest(f"plan: subtask {sid} needs a goal", field=f"subtasks.{i}.goal")
    role = d.get("role", "worker")
    if not isinstance(role, str) or not role.strip():
        raise InvalidRequest(f"plan: subtask {sid}: role must be a string", field=f"subtasks.{i}.role")
    sp = d.get("system_prompt")
    if sp is not None and not isinstance(sp, str):
        raise InvalidRequest(f"plan: subtask {sid}: system_prompt must be a string",
                             field=f"subtasks.{i}.system_prompt")
    return Subtask(sid, goal.strip(), role.strip(), _strs(d.get("capabilities"), f"subtasks.{i}.capabilities"),
                   _strs(d.get("depends_on"), f"subtasks.{i}.depends_on"), sp)


def find_cycle(deps: dict[str, tuple[str, ...]]) -> list[str] | None:
    """A dependency cycle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}   # 1 = on the stack, 2 = done
    for root in sorted(deps):
        if state.get(root):
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        state[root] = 1
        while stack:
            node, i = stack[-1]
            children = deps.get(node, ())
            if i < len(children):
                stack[-1] = (node, i + 1)
                child = children[i]
                if state.get(child) == 1:
                    return path[path.index(child):] + [child]
                if not state.get(child):
                    state[child] = 1
                    stack.append((child, 0))
                    path.append(child)
            else:
                state[node] = 2
                stack.pop()
                path.pop()
    return None


def parse_plan(data: Any) -> Plan:
    """Validate decoded plan data (``{"subtasks": [...]}`` or a bare list)."""
    items = data.get("subtasks") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise InvalidRequest("plan: expected {\"subtasks\": [...]} with at least one subtask", field="subtasks")
    if len(items) > MAX_SUBTASKS:
        raise InvalidRequest(f"plan: {len(items)} subtasks; at most {MAX_SUBTASKS}", field="subtasks")
    subtasks = [_subtask(i, d) for i, d in enumerate(items)]
    ids = [s.id for s in subtasks]
    dupes = sorted({x for x in ids if ids.count(x) > 1})
    if dupes:
        raise InvalidRequest(f"plan: duplicate subtask ids: {', '.join(dupes)}", field="subtasks", ids=dupes)
    known = set(ids)
    for s in subtasks:
        unknown = [d for d in s.depends_on if d not in known]
        if unknown:
            raise InvalidRequest(f"plan: subtask {s.id} depends on unknown subtask(s): {', '.join(unknown)}",
                                 field="depends_on", subtask=s.id, unknown=unknown)
    cycle = find_cycle({s.id: s.depends_on for s in subtasks})
    if cycle:
        raise InvalidRequest(f"plan: dependency cycle: {' -> '.join(cycle)}", field="depends_on", cycle=cycle)
    return Plan(tuple(subtasks))


def waves(plan: Plan) -> list[list[str]]:
    """Layers of subtask ids in plan order; each depends only on earlier layers."""
    done: set[str] = set()
    left = list(plan.subtasks)
    out: list[list[str]] = []
    while left:
        ready = [s for s in left if set(s.depends_on) <= done]
        if not ready:  # parse_plan rules this out; keep the function total
            raise InvalidRequest("plan: dependency cycle", field="depends_on")
        out.append([s.id for s in ready])
        done |= {s.id for s in ready}
        left = [s for s in left if s.id not in done]
    return out
