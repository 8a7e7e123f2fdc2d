"""Fixtures for the inference tests: real loopback fake servers speaking the real wire formats."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fakes.anthropic_server import FakeAnthropicServer  # noqa: E402
from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    s = FakeOpenAIServer()
    s.start()
    yield s
    s.stop()


@pytest.fixture
def anthropic_server() -> Iterator[FakeAnthropicServer]:
    s = FakeAnthropicServer()
    s.start()
    yield s
    s.stop()
