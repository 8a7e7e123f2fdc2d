"""An agent's result as the text a person or a model reads: a string as it is, the ``answer``
of a result that has one, anything else as JSON. Used by the faces and adapters that hand a
child's or an agent's result on as text (``a2a/server.py``, ``adapters/openai_agents.py``)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["answer_text"]


def answer_text(result: Any) -> str:
    if isinstance(result, str):
        return result
    if isinstance(result, dict) and isinstance(result.get("answer"), str):
        return result["answer"]
    return json.dumps(result, ensure_ascii=False, default=str)
