"""The file tools' fence is built on first use, once per call, and never skipped when read."""

from __future__ import annotations

from agentix.tools.base import ToolContext


def test_fence_is_built_once_on_first_read_and_not_before() -> None:
    built: list[object] = []

    def make() -> object:
        fence = object()
        built.append(fence)
        return fence

    ctx = ToolContext(agent=None, call=None, agent_id="a", workspace=None, make_fence=make)
    assert built == []                 # echo never reads it: nothing listed, nothing stat'ed
    first = ctx.fence
    assert built == [first]            # a file tool reads it: the real fence, built now
    assert ctx.fence is first and len(built) == 1   # the same fence for the rest of the call


def test_no_fence_source_means_no_fence() -> None:
    ctx = ToolContext(agent=None, call=None, agent_id=None, workspace=None)
    assert ctx.fence is None
