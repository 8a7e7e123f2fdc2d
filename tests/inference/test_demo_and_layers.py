"""The ten-agents demo row runs (simulated provider, labelled), stats are JSON (the purity of the
inference core is checked by tests/test_layering.py)."""

from __future__ import annotations

import asyncio
import json


def test_ten_agents_simulated_shares_follow_weights():
    from agentix.kernel.llm_demo import run_ten_agents

    r = asyncio.run(run_ten_agents(duration=6.0, use_local=False))
    assert r["scripted"] is True and "SIMULATED" in r["label"]  # never passed off as a real model
    assert r["fairness"] >= 0.9
    json.dumps(r["stats"])  # inference.stats is plain JSON for the RPC
    shares = r["shares"]
    assert shares["agent-9"] > shares["agent-4"] > shares["agent-0"]
