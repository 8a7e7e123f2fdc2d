"""loop.event archive writing: bounded per agent, private files, nothing written on refusal."""

from __future__ import annotations

import pytest

from agentix.core.errors import LimitExceeded
from agentix.kernel import loop_events


def test_archive_files_are_private_and_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(loop_events, "MAX_ARCHIVES", 3)
    paths = [loop_events.write_archive(tmp_path, "ag-1", {"messages": [i]}) for i in range(3)]
    assert len(set(paths)) == 3 and all(p.stat().st_mode & 0o777 == 0o600 for p in paths)
    assert (tmp_path / "ag-1").stat().st_mode & 0o777 == 0o700
    with pytest.raises(LimitExceeded):
        loop_events.write_archive(tmp_path, "ag-1", {"messages": ["x"]})
    assert sorted(p.name for p in (tmp_path / "ag-1").iterdir()) == sorted(p.name for p in paths)
    loop_events.write_archive(tmp_path, "ag-2", {"messages": []})   # another agent's cap is its own
