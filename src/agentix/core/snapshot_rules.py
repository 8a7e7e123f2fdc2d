"""Pure rules of agent snapshots: what a snapshot's grants are, how a restore narrows them,
and the snapshot document's shape. Values in, values or exceptions out; the clock is passed in.

A snapshot records an agent's capabilities as *grant groups* — one per live token: its
grant strings, the invocations it had left (``None`` = unlimited) and its absolute expiry
(``None`` = none) — never token bytes. A restore re-mints from them:

* with no ``accepted`` list, exactly the recorded groups;
* with one (``--grant``), each accepted grant must be covered by one recorded group, and
  it keeps that group's limits (invocations left, expiry): a restore is never wider than
  what was recorded, in grants or in limits. An accepted grant no group covers is refused
  (``HandoffEscalationDenied``, reason ``not_recorded``) — before anything is written;
* a group whose expiry has passed is dropped (reported), never revived;
* a snapshot's invocation counts are handed out once, not once per restore: the kernel
  records, per snapshot digest and group, what restores were given (``limited`` says what a
  restore asks for), and a restore mints only what is left (``ration``); a limited group
  with nothing left is dropped (reported as exhausted). An operator who means to mint the
  recorded counts again says so (``reissue_invocations``, audited).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentix.core.budget import DIMENSIONS
from agentix.core.errors import HandoffEscalationDenied, PackageRejected
from agentix.core.grants import parse_grants

__all__ = ["GrantGroup", "SNAPSHOT_API", "check_document", "limited", "narrow_groups", "narrow_indexed", "ration",
           "manifest_capabilities"]

SNAPSHOT_API = "agentix/v1"
_WS = "/workspace"
#: the keys every snapshot document has (docs/packages.md, "Snapshots")
DOCUMENT_KEYS = frozenset({"apiVersion", "kind", "metadata", "manifest", "grants", "taint", "state", "memory",
                           "mailbox", "budget", "workspace"})


@dataclass(frozen=True)
class GrantGroup:
    grants: tuple[str, ...]
    max_invocations: int | None = None   # invocations left when the snapshot was taken
    expires_at: float | None = None      # absolute (seconds since the epoch)

    def to_data(self) -> dict[str, Any]:
        return {"grants": list(self.grants), "max_invocations": self.max_invocations,
                "expires_at": self.expires_at}

    @staticmethod
    def from_data(d: Any) -> GrantGroup:
        try:
            grants = tuple(str(g) for g in d["grants"])
            mi = d.get("max_invocations")
            exp = d.get("expires_at")
            if mi is not None and (not isinstance(mi, int) or isinstance(mi, bool) or mi < 0):
                raise ValueError("max_invocations")
            if exp is not None and not isinstance(exp, (int, float)):
                raise ValueError("expires_at")
            parse_grants(list(grants), _WS)
        except Exception as err:  # noqa: BLE001 - any malformed group is one refusal
            raise PackageRejected(f"a grant group in the snapshot is malformed ({err})",
                                  reason="malformed_manifest") from None
        return GrantGroup(grants, mi, None if exp is None else float(exp))


def narrow_groups(recorded: Sequence[GrantGroup], accepted: Iterable[str] | None) -> list[GrantGroup]:
    """The groups a restore mints: the recorded ones, or ``accepted`` placed under them."""
    return [g for _, g in narrow_indexed(recorded, accepted)]


def narrow_indexed(recorded: Sequence[GrantGroup], accepted: Iterable[str] | None) -> list[tuple[int, GrantGroup]]:
    """``narrow_groups``, each group with the index of the recorded group it came from."""
    if accepted is None:
        return list(enumerate(recorded))
    parsed = [(g, parse_grants(list(g.grants), _WS)) for g in recorded]
    out: dict[int, list[str]] = {}
    lacking: list[str] = []
    for text in accepted:
        for grant in parse_grants([text], _WS):
            for i, (_g, gs) in enumerate(parsed):
                if gs.covers(grant):
                    out.setdefault(i, []).append(text)
                    break
            else:
                lacking.append(str(grant))
    if lacking:
        raise HandoffEscalationDenied(
            f"the snapshot's agent did not hold {lacking[0]}; a restore or fork can only narrow "
            "the recorded grants", reason="not_recorded", missing=lacking,
            recorded=[s for g in recorded for s in g.grants])
    return [(i, GrantGroup(tuple(dict.fromkeys(out[i])), recorded[i].max_invocations, recorded[i].expires_at))
            for i in sorted(out)]


def limited(groups: Sequence[tuple[int, GrantGroup]], now: float) -> dict[int, int]:
    """The invocations each limited, unexpired group asks for, by recorded index: what a
    restore takes from the snapshot's count (``ration``)."""
    return {i: g.max_invocations for i, g in groups
            if g.max_invocations is not None and (g.expires_at is None or now < g.expires_at)}


def ration(groups: Sequence[tuple[int, GrantGroup]],
           taken: Mapping[int, int]) -> tuple[list[GrantGroup], list[GrantGroup]]:
    """The groups a restore mints when it was given ``taken[i]`` invocations of each limited
    group ``i`` (what the snapshot recorded minus what earlier restores of it were given),
    and the limited groups it gets none of (exhausted: dropped, never minted with a count of
    zero). A group not in ``taken`` (unlimited, or expired) is minted as recorded."""
    out: list[GrantGroup] = []
    exhausted: list[GrantGroup] = []
    for i, g in groups:
        if i not in taken:
            out.append(g)
        elif taken[i] <= 0:
            exhausted.append(g)
        else:
            out.append(GrantGroup(g.grants, min(taken[i], g.max_invocations or 0), g.expires_at))
    return out, exhausted


def manifest_capabilities(groups: Sequence[GrantGroup], now: float) -> tuple[list[Any], list[GrantGroup]]:
    """Manifest ``capabilities`` for the restored agent and the groups dropped as expired.

    Unlimited groups become plain strings (minted together, as a spawn would); a limited
    group becomes a ``{grant, max_invocations, expires}`` entry (``expires`` in seconds from
    ``now``)."""
    caps: list[Any] = []
    dropped: list[GrantGroup] = []
    for g in groups:
        if g.expires_at is not None and not now < g.expires_at:
            dropped.append(g)
            continue
        if g.max_invocations is None and g.expires_at is None:
            caps.extend(s for s in g.grants if s not in caps)
            continue
        entry: dict[str, Any] = {"grant": list(g.grants)}
        if g.max_invocations is not None:
            entry["max_invocations"] = g.max_invocations
        if g.expires_at is not None:
            entry["expires"] = g.expires_at - now
        caps.append(entry)
    return caps, dropped


def check_document(doc: Any) -> dict[str, Any]:
    """The snapshot document (the artifact's config), shape-checked; raises ``PackageRejected``."""
    if not isinstance(doc, dict) or doc.get("kind") != "snapshot" or doc.get("apiVersion") != SNAPSHOT_API:
        raise PackageRejected("not an agentix snapshot (its config is not a snapshot document)",
                              reason="not_a_snapshot")
    missing = sorted(DOCUMENT_KEYS - set(doc))
    if missing or not isinstance(doc.get("manifest"), dict) or not isinstance(doc.get("state"), list) \
            or not isinstance(doc.get("mailbox"), list) or not isinstance(doc.get("memory"), list):
        raise PackageRejected(f"the snapshot document is malformed (missing or wrong: {missing or 'a list'})",
                              reason="malformed_manifest")
    wrong = _wrong_part(doc)
    if wrong is not None:
        raise PackageRejected(f"the snapshot document is malformed: {wrong}", reason="malformed_manifest",
                              field=wrong.split(" ", 1)[0])
    return doc


#: what a snapshot's ``budget.spent`` may hold (``snapshots_api.capture``): counts are whole
#: numbers, the cost a number; each finite and not negative
SPENT_COUNTS = (*(d for d in DIMENSIONS if d != "cost_usd"), "tool_calls", "children")


def _labels(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(v, str) for v in x)


def _wrong_part(doc: dict[str, Any]) -> str | None:
    """What in the parts a restore puts back is not as a kernel writes it (``snapshots_api
    .capture``), as ``FIELD what`` — or None. A snapshot from elsewhere is its publisher's
    document: a negative or NaN ``spent`` would lift the budget a restore gives (its limits are
    capped, what was used is subtracted from them), a label that is not a string would be lost."""
    if not _labels(doc["taint"]):
        return "taint must be a list of labels"
    budget = doc["budget"]
    if not isinstance(budget, dict) or not isinstance(budget.get("limits", {}), dict) \
            or not isinstance(budget.get("spent", {}), dict):
        return "budget must be {limits: {...}, spent: {...}}"
    for key, v in (budget.get("spent") or {}).items():
        if key not in (*SPENT_COUNTS, *DIMENSIONS):
            return f"budget.spent.{key} is not something a budget counts"
        whole = key in SPENT_COUNTS
        if isinstance(v, bool) or not isinstance(v, int if whole else (int, float)) or not 0 <= v < float("inf"):
            return (f"budget.spent.{key} must be a {'whole ' if whole else ''}number, not negative "
                    f"(got {str(v)[:40]})")
    for i, row in enumerate(doc["state"]):
        if not isinstance(row, dict) or not isinstance(row.get("key"), str) or "value" not in row \
                or not _labels(row.get("taint", [])):
            return f"state.{i} must be {{key: string, value, taint: [labels]}}"
    for i, m in enumerate(doc["mailbox"]):
        if not isinstance(m, dict) or not all(isinstance(m.get(k), (str, type(None))) for k in ("from", "from_name")) \
                or not _labels(m.get("taint", [])):
            return f"mailbox.{i} must be {{from, from_name: string or null, message, taint: [labels]}}"
    for i, r in enumerate(doc["memory"]):
        if not isinstance(r, dict) or not isinstance(r.get("content"), str) or not isinstance(r.get("category"), str) \
                or not isinstance(r.get("metadata") or {}, dict) or not _labels(r.get("taint") or []) \
                or not isinstance(r.get("embedding", ""), str) or not isinstance(r.get("embedder", ""), (str, type(None))):
            return f"memory.{i} must be {{content, category: string, metadata: object, embedding: base64, taint}}"
    return None
