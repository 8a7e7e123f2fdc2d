"""Property: whatever tree an attacker builds (directories, files, symlinks in and out), a
file tool never reads outside the granted root, never follows a symlink, and a refused
write changes nothing."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentix.core.errors import AgentixError
from agentix.tools import safe_fs

NAMES = ["a", "b", "c"]
entries = st.lists(
    st.tuples(
        st.lists(st.sampled_from(NAMES), min_size=1, max_size=3),  # path inside the root
        st.sampled_from(["dir", "file", "link_out", "link_in", "link_up", "link_abs_secret"]),
    ),
    max_size=10,
)
rels = st.lists(st.sampled_from(NAMES + [".."]), min_size=1, max_size=4).map("/".join)


def build(root: Path, outside: Path, spec) -> None:
    for parts, kind in spec:
        p = root.joinpath(*parts)
        try:
            if p.exists() or p.is_symlink():
                continue
            if any(q.is_symlink() for q in [p.parent, *p.parent.parents]):
                continue
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError:  # a symlink loop or a file in the way: skip this entry
            continue
        if kind == "dir":
            p.mkdir()
        elif kind == "file":
            p.write_text("inside:" + "/".join(parts))
        elif kind == "link_out":
            os.symlink(outside, p)
        elif kind == "link_in":
            os.symlink(root / "a", p)
        elif kind == "link_up":
            os.symlink("../" * len(parts) + "../outside", p)
        else:
            os.symlink(outside / "secret", p)


def lexical_ok(root: Path, rel: str) -> bool:
    parts = rel.split("/")
    if ".." in parts:
        return False
    cur = root
    for part in parts:
        cur = cur / part
        if cur.is_symlink():
            return False
    return True


def tree(root: Path) -> dict:
    out = {}
    for dp, dn, fn in os.walk(root):
        for n in dn + fn:
            p = Path(dp) / n
            out[str(p)] = (p.is_symlink(), p.is_symlink() and os.readlink(p)) if p.is_symlink() else (
                "dir" if p.is_dir() else p.read_bytes())
    return out


def _check(spec, rel, use_openat2, op):
    saved = safe_fs._openat2_ok
    safe_fs._openat2_ok = None if use_openat2 else False
    try:
        with tempfile.TemporaryDirectory() as t:
            base = Path(t)
            root, outside = base / "root", base / "outside"
            root.mkdir()
            outside.mkdir()
            (outside / "secret").write_text("SECRET")
            build(root, outside, spec)
            before = tree(base)
            try:
                if op == "read":
                    res = safe_fs.file_read(str(root), rel)
                    assert "SECRET" not in res["content"]
                    assert lexical_ok(root, rel)
                    assert (root / rel).read_text() == res["content"]
                elif op == "write":
                    safe_fs.file_write(str(root), rel, "NEW", create_parents=True)
                    assert lexical_ok(root, rel)
                    assert (root / rel).read_text() == "NEW"
                    assert (outside / "secret").read_text() == "SECRET"
                    assert sorted(os.listdir(outside)) == ["secret"]
                else:
                    res = safe_fs.file_list(str(root), rel, recursive=True)
                    assert lexical_ok(root, rel)
                    assert all("secret" not in e["name"] or e["type"] == "symlink" for e in res["entries"])
            except (AgentixError, ValueError):
                assert tree(base) == before, "a refused call changed the disk"
    finally:
        safe_fs._openat2_ok = saved


FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ops = st.sampled_from(["read", "write", "list"])


@st.composite
def cases(draw):
    """A tree, and a path that often goes through (or ends at) something in it."""
    spec = draw(entries)
    if spec and draw(st.booleans()):
        parts, _ = draw(st.sampled_from(spec))
        rel = "/".join(parts + draw(st.lists(st.sampled_from(NAMES + ["secret"]), max_size=2)))
    else:
        rel = draw(rels)
    return spec, rel


@FAST
@given(cases(), st.booleans(), ops)
def test_file_tools_stay_beneath_the_root(case, use_openat2, op):
    _check(*case, use_openat2, op)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@SLOW
@given(cases(), st.booleans(), ops)
def test_file_tools_stay_beneath_the_root_slow(case, use_openat2, op):
    _check(*case, use_openat2, op)
