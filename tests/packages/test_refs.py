"""Package references (SCENARIO 54): parsed once; whatever a name says, it never names a path."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentix.core.errors import InvalidRequest
from agentix.core.package import parse_ref


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="ab1./:@-_\\ \x00%sha256" + "0" * 8, max_size=60))
def test_any_accepted_reference_is_a_clean_name(text: str) -> None:
    try:
        ref = parse_ref(text)
    except InvalidRequest:
        return
    parts = ref.path.split("/")
    assert all(parts) and ".." not in parts and "." not in parts
    assert not ref.path.startswith("/") and "\\" not in ref.path and "\x00" not in str(ref)
    assert parse_ref(str(ref)) == ref  # round-trips


@pytest.mark.parametrize("text,registry,path,tag", [
    ("team/hello", None, "team/hello", "latest"),
    ("team/hello:1.0.0", None, "team/hello", "1.0.0"),
    ("127.0.0.1:5000/team/hello:1.0.0", "127.0.0.1:5000", "team/hello", "1.0.0"),
    ("localhost/x:y", "localhost", "x", "y"),
    ("registry.example/a/b/c:v1", "registry.example", "a/b/c", "v1"),
])
def test_references_parse_as_docker_does(text: str, registry: str | None, path: str, tag: str) -> None:
    ref = parse_ref(text)
    assert (ref.registry, ref.path, ref.tag) == (registry, path, tag)


def test_a_digest_pins_the_reference() -> None:
    d = "sha256:" + "a" * 64
    ref = parse_ref(f"r.example/team/x:1.0.0@{d}")
    assert ref.digest == d and ref.tag is None and str(ref) == f"r.example/team/x@{d}"
    with pytest.raises(InvalidRequest):
        parse_ref("team/x@sha256:" + "A" * 64)
