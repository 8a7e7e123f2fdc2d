"""Makes ``tests.fakes`` importable for the agent tests (fake LLM servers on 127.0.0.1)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
