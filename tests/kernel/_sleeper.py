"""An in-process kernel whose agents sleep (``sleeper.py``): the test drives their system
calls itself, as the agent (``as_agent``), so a call can be held, timed and ended."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from security._world import World  # noqa: E402

from agentix.kernel.dispatch import Caller  # noqa: E402

__all__ = ["SleeperWorld", "as_agent"]

SLEEPER = '''
import time
from agentix.sdk import agent
k = agent.connect()
time.sleep(3600)
'''


class SleeperWorld(World):
    programs = {"sleeper.py": SLEEPER}


def as_agent(rec: Any) -> Caller:
    """The caller an agent's own channel names (its calls go through the pipeline as its)."""
    return Caller(agent_id=rec.agent_id, name=rec.name, workspace=rec.workspace)
