"""Property tests of the confine wire formats: the policy and the report survive the trip."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from agentix.sandbox.confine import Policy, _js

paths = st.lists(st.text(st.characters(blacklist_characters="\x1e\x1f\x00", blacklist_categories=("Cs",)),
                         min_size=1).map(lambda s: "/" + s), max_size=6)
layers = st.lists(st.sampled_from(["namespaces", "landlock", "seccomp", "rlimits", "privileges"]), unique=True)


@given(ro=paths, rw=paths, dev=paths, req=layers, nofile=st.integers(16, 1 << 20),
       fsize=st.integers(0, 1 << 40), net=st.booleans(), deg=st.booleans(),
       sc=st.sampled_from(["preloaded", "load", "off"]))
def test_policy_round_trips_through_the_environment(ro, rw, dev, req, nofile, fsize, net, deg, sc) -> None:
    p = Policy(rlimits={"core": 0, "nofile": nofile, "fsize": fsize}, landlock_ro=ro, landlock_rw=rw,
               landlock_dev=dev, seccomp=sc, network=net, required=req, degraded_ok=deg)
    q = Policy.from_env(p.to_env())
    for name in Policy.__slots__:
        assert getattr(q, name) == getattr(p, name), name


def test_a_path_with_a_separator_is_refused() -> None:
    try:
        Policy(landlock_ro=["/a\x1eb"]).to_env()
    except ValueError:
        return
    raise AssertionError("a separator inside a path was accepted")


json_values = st.recursive(
    st.booleans() | st.text(st.characters(blacklist_categories=("Cs",))),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@given(json_values)
def test_the_report_encoder_writes_json(value) -> None:
    assert json.loads(_js(value)) == value


@given(st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,20}", fullmatch=True),
                       st.text(alphabet=st.characters(blacklist_characters="\x00",
                                                      blacklist_categories=("Cs",)), max_size=40),
                       max_size=6))
def test_the_agent_env_round_trips_and_its_text_never_appears_in_the_policy(env) -> None:
    """The manifest's env rides inside the policy hex-encoded: separators, '=' and any
    Unicode survive, and neither a name nor a value appears as text a launcher could see."""
    text = Policy(env=env).to_env()
    assert Policy.from_env(text).env == env
    for k, v in env.items():
        assert f"{k}=" not in text
        # (a value made only of characters the policy itself uses could match by chance)
        if any(c not in "abcdefghijklmnopqrstuvwxyz0123456789=:\x1e\x1f" for c in v):
            assert v not in text
