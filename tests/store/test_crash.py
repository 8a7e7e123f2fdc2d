"""kill -9 of a writer under concurrent load loses no acknowledged append, and no effect
happened without its durable intent record (no-effect records are posted, not awaited)."""

from __future__ import annotations

import random

import pytest

from .crashtrial import run_trials


def _trials(tmp_path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "agentix.db"
    total_acked = total_effects = 0
    for i, r in enumerate(run_trials(path, rng, n)):
        total_acked += r.acked
        total_effects += r.effects
        assert r.lost == 0, f"trial {i}: {r}"
        assert r.effects_without_intent == 0, f"trial {i}: {r}"
        assert r.chain_ok, f"trial {i}: {r}"
        assert r.left_running == 0, f"trial {i}: {r}"
    assert i == n - 1  # every trial ran
    assert total_acked > 0  # the trials did kill a writer that had acknowledged appends
    assert total_effects > 0  # ... and that had performed effects


def test_twenty_kill9_trials_lose_nothing_acknowledged(tmp_path):
    _trials(tmp_path, 20, seed=20)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_two_hundred_kill9_trials_lose_nothing_acknowledged(tmp_path):
    _trials(tmp_path, 200, seed=200)
