"""Attack round 3 on the trust core: held calls, revocation on the very next call of every
method, and what an agent can make the host side do.

Each test is named after the attack and asserts the refusal AND that the world did not move
(nothing delivered, spawned, delegated, written, sent to a provider or charged). Harness: the
scenarios' one (``_world.py``), real kernel, real agent processes on their real channel.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _world import World, run, tool  # noqa: E402  (same directory)

from agentix.core.manifest import parse_manifest  # noqa: E402
from agentix.kernel.dispatch import Caller  # noqa: E402
from agentix.kernel.methods import POLICIES  # noqa: E402

SLEEPER = '''
import time
from agentix.sdk import agent
k = agent.connect()
time.sleep(3600)
'''

#: one provider lane of concurrency 1 whose every answer takes a while: a second ``think``
#: waits in the queue behind the first
SLOW_SCRIPTED = ('default_model = "sim:engine"\n\n[providers.sim]\nkind = "scripted"\n'
                 'script = "turns.yaml"\nloop = true\nconcurrency = 1\n')
SLOW_TURN = "- {text: 'slow', delay: 1.0, usage: {input_tokens: 5, output_tokens: 2}}\n"


class _World(World):
    programs = {"sleeper.py": SLEEPER}


def _caller(rec: Any) -> Caller:
    return Caller(agent_id=rec.agent_id, name=rec.name, workspace=rec.workspace)


# ---------------------------------------------------------------------------- held calls
def test_think_queued_behind_another_agent_is_refused_when_its_model_token_is_revoked_while_it_waits(tmp_path):
    """A ``think`` decided while its token was live waits for the provider's one slot; the
    operator revokes the token meanwhile. When its turn comes it must be refused: the
    provider is never asked (no usage, no money), its budget reservation is given back and
    its invocation is not charged again. The agent in front is unaffected."""
    msgs = {"messages": [{"role": "user", "content": "hi"}]}

    async def body(w: World):
        (w.home.root / "turns.yaml").write_text(SLOW_TURN)
        front = await w.spawn(["model: sim:*"], name="front", program="sleeper.py")
        held = await w.spawn([{"grant": "model: sim:*", "max_invocations": 5}], name="held",
                             program="sleeper.py")
        first = asyncio.ensure_future(w.k.pipeline.run(_caller(front), "think", dict(msgs)))
        for _ in range(200):  # the front request holds the provider's one slot
            if w.k.inference.stats()["providers"]["sim"]["in_flight"] >= 1:
                break
            await asyncio.sleep(0.01)
        second = asyncio.ensure_future(w.k.pipeline.run(_caller(held), "think", dict(msgs)))
        for _ in range(200):  # decided, charged, and now waiting in the queue
            if w.k.inference.stats()["providers"]["sim"]["queue_length"] >= 1:
                break
            await asyncio.sleep(0.01)
        tok = w.k.caps.held[held.agent_id][0]
        used_before = w.k.caps.ledger.used(tok.id)
        await w.op("cap.revoke", token_id=tok.id)
        out: list[Any] = []
        for fut in (first, second):
            try:
                out.append(await fut)
            except Exception as err:  # noqa: BLE001
                out.append(err)
        usage = [e["agent"] for e in w.events("usage.reported")]
        return out, usage, front, held, used_before, w.k.caps.ledger.used(tok.id), held.budget

    out, usage, front, held, used_before, used_after, budget = run(tmp_path, body, SLOW_SCRIPTED,
                                                                   world=_World)
    assert isinstance(out[0], dict) and out[0]["text"] == "slow"  # the front one is unaffected
    assert getattr(out[1], "code", None) == "capability_revoked", out[1]
    assert usage == [front.agent_id]  # the provider never answered the revoked one
    assert used_before == 1 and used_after == 1  # charged once when decided, never again
    # its budget reservation was given back and nothing was spent
    assert budget.reserved.input_tokens == 0 and budget.reserved.output_tokens == 0, budget.reserved
    assert budget.used.input_tokens == 0 and budget.used.output_tokens == 0, budget.used
