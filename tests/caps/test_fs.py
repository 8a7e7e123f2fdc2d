"""Path-safe file tools: SCENARIOS 15, 16, 17, 28, 29 at the function level, and an attack
catalogue. Every test runs twice: with openat2 and with the O_NOFOLLOW walk fallback. Every
refusal asserts that nothing on disk changed."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from agentix.core.caps import Authority, generate_root_key
from agentix.core.errors import CapabilityDenied, InvalidRequest, LimitExceeded, ToolError
from agentix.tools import safe_fs

NOW = 1_800_000_000.0


@pytest.fixture(params=["openat2", "walk"])
def mode(request, monkeypatch):
    if request.param == "walk":
        monkeypatch.setattr(safe_fs, "_openat2_ok", False)
    else:
        assert safe_fs.openat2_available(), "this host should support openat2"
    return request.param


@pytest.fixture
def world(tmp_path, mode):
    """tmp/granted (the grant) and tmp/outside (secrets the agent must never touch)."""
    g = tmp_path / "granted"
    o = tmp_path / "outside"
    (g / "sub").mkdir(parents=True)
    o.mkdir()
    (g / "a.txt").write_text("alpha\nbeta\n")
    (g / "sub" / "b.txt").write_text("bravo\n")
    (o / "secret.txt").write_text("TOP SECRET\n")
    (o / "dir").mkdir()
    return tmp_path


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root: type, mode, size, content hash, symlink target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if p.is_symlink():
                out[str(p)] = ("link", os.readlink(p))
            elif p.is_dir():
                out[str(p)] = ("dir", st.st_mode)
            elif p.is_file():
                out[str(p)] = ("file", st.st_mode, st.st_size, hashlib.sha256(p.read_bytes()).hexdigest(), st.st_ino)
            else:
                out[str(p)] = ("other", st.st_mode)
    return out


def G(world):
    return str(world / "granted")


# ------------------------------------------------------------------ reading


def test_read_with_offset_limit_and_cap(world):
    r = safe_fs.file_read(G(world), "a.txt", offset=2, limit=3)
    assert r["content"] == "pha" and r["truncated"] and r["size"] == 11
    r = safe_fs.file_read(G(world), "a.txt", max_bytes=4)
    assert r["content"] == "alph" and r["truncated"]
    assert safe_fs.file_read(G(world), "a.txt")["content"] == "alpha\nbeta\n"


def test_binary_is_returned_as_base64(world):
    (world / "granted" / "bin").write_bytes(b"\xff\x00\xfe")
    r = safe_fs.file_read(G(world), "bin")
    assert r["encoding"] == "base64" and r["content"] == "/wD+"


def test_fifo_is_refused_not_blocked_on(world):
    os.mkfifo(world / "granted" / "pipe")
    with pytest.raises(ToolError, match="not a regular file"):
        safe_fs.file_read(G(world), "pipe")


ESCAPES = [
    ("symlink_dir_to_outside", lambda g, o: os.symlink(o, g / "link"), "link/secret.txt"),
    ("symlink_file_to_outside", lambda g, o: os.symlink(o / "secret.txt", g / "link"), "link"),
    ("symlink_to_etc", lambda g, o: os.symlink("/etc", g / "link"), "link/passwd"),
    ("relative_symlink_up", lambda g, o: os.symlink("../outside", g / "sub" / "up"), "sub/up/secret.txt"),
    ("symlink_inside_grant_too", lambda g, o: os.symlink("sub", g / "inner"), "inner/b.txt"),
    ("proc_magic_link", lambda g, o: os.symlink("/proc/self/root/etc", g / "link"), "link/passwd"),
]


@pytest.mark.parametrize("name, setup, rel", ESCAPES, ids=[e[0] for e in ESCAPES])
def test_s15_symlink_anywhere_is_refused_for_read(world, name, setup, rel):
    setup(world / "granted", world / "outside")
    before = snapshot(world)
    with pytest.raises(CapabilityDenied) as info:
        safe_fs.file_read(G(world), rel)
    assert info.value.data["reason"] == "symlink"
    assert "SECRET" not in str(info.value.to_rpc())
    assert snapshot(world) == before


@pytest.mark.parametrize("rel", ["../outside/secret.txt", "sub/../../outside/secret.txt", "/etc/passwd"])
def test_dotdot_and_absolute_rel_are_refused(world, rel):
    with pytest.raises((CapabilityDenied, InvalidRequest)):
        safe_fs.file_read(G(world), rel)


def test_s15_swap_to_symlink_between_check_and_use_changes_nothing(world):
    """The lexical check passed for granted/a.txt; then a.txt became a symlink to a secret."""
    auth = Authority(generate_root_key())
    tok = auth.mint("a", [f"file_read: {G(world)}/*", f"file_write: {G(world)}/*"], now=NOW)
    root, rel = safe_fs.locate(tok, "file_read", f"{G(world)}/a.txt")  # check done
    target = world / "granted" / "a.txt"
    target.unlink()
    os.symlink(world / "outside" / "secret.txt", target)  # swapped before use
    before = snapshot(world)
    with pytest.raises(CapabilityDenied):
        safe_fs.file_read(root, rel)
    with pytest.raises(CapabilityDenied):
        safe_fs.file_write(root, rel, "pwned")
    with pytest.raises(CapabilityDenied):
        safe_fs.file_write(root, rel, "pwned", append=True)
    with pytest.raises(CapabilityDenied):
        safe_fs.file_edit(root, rel, "TOP", "pwned")
    assert snapshot(world) == before
    assert (world / "outside" / "secret.txt").read_text() == "TOP SECRET\n"


def test_s15_racing_swapper_never_leaks(world):
    """A thread flips granted/race between a regular file and a symlink to the secret."""
    g = world / "granted"
    stop = threading.Event()

    def flipper():
        p = g / "race"
        while not stop.is_set():
            try:
                pub = g / "race.pub"
                pub.write_text("public\n")
                os.replace(pub, p)  # never write *through* p: it may be the symlink
                tmp = g / "race.lnk"
                os.symlink(world / "outside" / "secret.txt", tmp)
                os.replace(tmp, p)
            except OSError:
                pass

    t = threading.Thread(target=flipper)
    t.start()
    try:
        for _ in range(400):
            try:
                r = safe_fs.file_read(str(g), "race")
                assert "SECRET" not in r["content"]
            except (CapabilityDenied, ToolError):
                pass
            try:
                safe_fs.file_write(str(g), "race", "x", append=True)
            except (CapabilityDenied, ToolError):
                pass
    finally:
        stop.set()
        t.join()
    assert (world / "outside" / "secret.txt").read_text() == "TOP SECRET\n"


def test_list_and_grep_never_follow_symlinks(world):
    os.symlink(world / "outside", world / "granted" / "link")
    listing = safe_fs.file_list(G(world), "", recursive=True)
    names = {e["name"]: e["type"] for e in listing["entries"]}
    assert names["link"] == "symlink" and "link/secret.txt" not in names
    found = safe_fs.grep(G(world), "", "SECRET|bravo")
    assert [m["text"] for m in found["matches"]] == ["bravo"]
    with pytest.raises(CapabilityDenied):
        safe_fs.file_list(G(world), "link")
    with pytest.raises(CapabilityDenied):
        safe_fs.grep(G(world), "link", "SECRET")


def test_grep_finds_lines_and_caps_matches(world):
    (world / "granted" / "many.txt").write_text("hit\n" * 50)
    r = safe_fs.grep(G(world), "many.txt", "hit", max_matches=10)
    assert len(r["matches"]) == 10 and r["truncated"]
    r = safe_fs.grep(G(world), "", "alph", regex=False)
    assert {m["path"].rsplit("/", 1)[1] for m in r["matches"]} == {"a.txt"}
    with pytest.raises(InvalidRequest):
        safe_fs.grep(G(world), "", "(")


# ------------------------------------------------------------------ writing


def test_s16_write_grant_covers_a_file_that_does_not_exist_yet(world):
    r = safe_fs.file_write(G(world), "new.txt", "hello")
    assert r["created"] and (world / "granted" / "new.txt").read_text() == "hello"
    r = safe_fs.file_write(G(world), "deep/er/new.txt", "x", create_parents=True)
    assert (world / "granted" / "deep" / "er" / "new.txt").read_text() == "x"


def test_write_replaces_atomically_keeping_mode(world):
    p = world / "granted" / "a.txt"
    p.chmod(0o600)
    ino = p.stat().st_ino
    safe_fs.file_write(G(world), "a.txt", "new")
    assert p.read_text() == "new" and (p.stat().st_mode & 0o777) == 0o600
    assert p.stat().st_ino != ino, "a new inode: replaced, never truncated in place"
    assert not [x for x in os.listdir(world / "granted") if ".agentix-" in x]


def test_append(world):
    safe_fs.file_write(G(world), "a.txt", "gamma\n", append=True)
    assert (world / "granted" / "a.txt").read_text() == "alpha\nbeta\ngamma\n"


def test_missing_parent_without_create_parents_creates_nothing(world):
    before = snapshot(world)
    with pytest.raises(ToolError, match="parent directory does not exist"):
        safe_fs.file_write(G(world), "nope/x.txt", "x")
    assert snapshot(world) == before


REFUSED_WRITES = [
    ("through_dir_symlink", lambda g, o: os.symlink(o, g / "link"), "link/secret.txt", {}),
    ("new_file_through_dir_symlink", lambda g, o: os.symlink(o, g / "link"), "link/new.txt", {}),
    ("mkdir_through_dir_symlink", lambda g, o: os.symlink(o, g / "link"), "link/d1/d2/new.txt",
     {"create_parents": True}),
    ("final_symlink_to_secret", lambda g, o: os.symlink(o / "secret.txt", g / "link"), "link", {}),
    ("final_symlink_append", lambda g, o: os.symlink(o / "secret.txt", g / "link"), "link", {"append": True}),
    ("dangling_symlink_create", lambda g, o: os.symlink(o / "created-by-attack", g / "link"), "link", {}),
    ("hardlink_append", lambda g, o: os.link(o / "secret.txt", g / "hl"), "hl", {"append": True}),
    ("dotdot_escape", lambda g, o: None, "../outside/secret.txt", {}),
    ("dotdot_mkdir", lambda g, o: None, "sub/../../outside/dir/x/y", {"create_parents": True}),
    ("fifo_target", lambda g, o: os.mkfifo(g / "pipe"), "pipe", {"append": True}),
    ("directory_target", lambda g, o: None, "sub", {}),
]


@pytest.mark.parametrize("name, setup, rel, kw", REFUSED_WRITES, ids=[w[0] for w in REFUSED_WRITES])
def test_s17_refused_write_changes_nothing(world, name, setup, rel, kw):
    setup(world / "granted", world / "outside")
    before = snapshot(world)
    with pytest.raises((CapabilityDenied, ToolError, InvalidRequest)):
        safe_fs.file_write(G(world), rel, "PWNED", **kw)
    assert snapshot(world) == before, f"{name} changed the disk"


def test_size_limit_refuses_before_touching_disk(world):
    before = snapshot(world)
    with pytest.raises(LimitExceeded):
        safe_fs.file_write(G(world), "big/x", "x" * 100, max_bytes=10, create_parents=True)
    assert snapshot(world) == before


def test_write_to_the_root_itself_is_invalid(world):
    with pytest.raises(InvalidRequest):
        safe_fs.file_write(G(world), "", "x")


# ------------------------------------------------------------------ read_many, edit


def _resolver(world, grants):
    auth = Authority(generate_root_key())
    tok = auth.mint("a", grants, now=NOW)
    return lambda p: safe_fs.locate(tok, "file_read", p)


def test_s28_read_many_over_the_cap_is_refused(world):
    with pytest.raises(LimitExceeded):
        safe_fs.file_read_many(_resolver(world, [f"file_read: {G(world)}/*"]), [f"{G(world)}/a.txt"] * 17)


def test_s28_one_denied_path_among_three_returns_the_other_two(world):
    resolve = _resolver(world, [f"file_read: {G(world)}/*"])
    paths = [f"{G(world)}/a.txt", str(world / "outside" / "secret.txt"), f"{G(world)}/sub/b.txt"]
    out = safe_fs.file_read_many(resolve, paths)["results"]
    assert [r["ok"] for r in out] == [True, False, True]
    assert out[0]["content"] == "alpha\nbeta\n" and out[2]["content"] == "bravo\n"
    assert out[1]["error"]["code"] == "capability_denied"
    assert "SECRET" not in str(out)


def test_s29_ambiguous_edit_is_refused_unless_replace_all(world):
    p = world / "granted" / "dup.txt"
    p.write_text("x = 1\nx = 1\n")
    before = snapshot(world)
    with pytest.raises(ToolError, match="occurs 2 times"):
        safe_fs.file_edit(G(world), "dup.txt", "x = 1", "x = 2")
    assert snapshot(world) == before
    r = safe_fs.file_edit(G(world), "dup.txt", "x = 1", "x = 2", replace_all=True)
    assert r["replacements"] == 2 and p.read_text() == "x = 2\nx = 2\n"


def test_edit_unique_match_and_missing_text(world):
    safe_fs.file_edit(G(world), "a.txt", "beta", "BETA")
    assert (world / "granted" / "a.txt").read_text() == "alpha\nBETA\n"
    before = snapshot(world)
    with pytest.raises(ToolError, match="not found"):
        safe_fs.file_edit(G(world), "a.txt", "zeta", "x")
    assert snapshot(world) == before


def test_locate_denies_outside_and_picks_the_narrowest_root(world):
    auth = Authority(generate_root_key())
    parent = auth.mint("a", [f"file_read: {world}/*"], now=NOW)
    child = auth.attenuate(parent, [f"file_read: {G(world)}/sub/*"], now=NOW)
    assert safe_fs.locate(child, "file_read", f"{G(world)}/sub/b.txt") == (f"{G(world)}/sub", "b.txt")
    with pytest.raises(CapabilityDenied):
        safe_fs.locate(child, "file_read", f"{G(world)}/a.txt")
    with pytest.raises(CapabilityDenied):
        safe_fs.locate(child, "file_write", f"{G(world)}/sub/b.txt")
    with pytest.raises(InvalidRequest):
        safe_fs.locate(child, "file_read", f"{G(world)}/sub/../a.txt")


def test_deep_trees_are_walked_to_a_bounded_depth(world):
    d = world / "granted"
    for _ in range(safe_fs.MAX_DEPTH + 5):
        d = d / "d"
    d.mkdir(parents=True)
    (d / "deep.txt").write_text("needle\n")
    listing = safe_fs.file_list(G(world), "", recursive=True, max_entries=10_000)
    assert listing["truncated"]
    assert safe_fs.grep(G(world), "", "needle")["matches"] == []
