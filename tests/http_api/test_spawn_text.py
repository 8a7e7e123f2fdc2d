"""``agent.spawn {manifest_text}``: the dashboard's paste box sends the manifest as YAML or JSON
text and the kernel parses it exactly as it parses a manifest file."""

from __future__ import annotations

import json
import os

import pytest

from conftest import program
from http_api.conftest import Api


def test_a_yaml_manifest_sent_as_text_spawns_the_agent_it_describes(api: Api) -> None:
    text = f"name: pasted\nprogram: {program('sleeper.py')}\nargs: ['0.1']\ncapabilities:\n  - 'tool: echo'\n"
    r = api.post("agent.spawn", {"manifest_text": text})
    assert r.status_code == 200, r.text
    aid = r.json()["agent_id"]
    st = api.daemon.client.call("agent.status", agent_id=aid)
    assert st["name"] == "pasted" and st["manifest"]["capabilities"] == ["tool: echo"]
    # JSON is YAML: the same text as JSON spawns too
    r = api.post("agent.spawn", {"manifest_text": json.dumps({"name": "pasted-json", "program": program("sleeper.py"),
                                                               "args": ["0.1"]})})
    assert r.status_code == 200 and r.json()["name"] == "pasted-json"


def test_bad_manifest_text_is_refused_with_a_clear_error_and_spawns_nothing(api: Api) -> None:
    n = api.agent_count()
    cases = [
        ("name: [unclosed", "not valid YAML or JSON"),
        ("- just\n- a list\n", "mapping"),
        ("name: rel\nprogram: agent.py\n", "absolute"),           # no file to resolve it against
        ("name: x\nprogram: /bin/true\nbogus_field: 1\n", "bogus_field"),
    ]
    for text, words in cases:
        r = api.post("agent.spawn", {"manifest_text": text})
        assert r.status_code == 400, (text, r.text)
        err = r.json()["error"]
        assert err["code"] in ("invalid_request", "invalid_params") and words in err["message"], (text, err)
    r = api.post("agent.spawn", {"manifest_text": 12})
    assert r.status_code == 400 and r.json()["error"]["data"]["field"] == "manifest_text"
    r = api.post("agent.spawn", {"manifest_text": "name: big\n# " + "x" * (1024 * 1024) + "\n"})
    assert r.status_code in (400, 413)
    assert api.agent_count() == n   # nothing was spawned


def _alias_bomb(levels: int = 9) -> str:
    rows = ['  - &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    rows += [f"  - &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "name: bomb\nprogram: /bin/true\nargs:\n" + "\n".join(rows) + "\n"


ATTACKS = {
    # a billion laughs: 10^9 strings once the aliases are expanded
    "yaml alias bomb": _alias_bomb(),
    "deep nesting": "name: deep\nprogram: /bin/true\nargs: " + "[" * 5000 + "]" * 5000 + "\n",
    "a python object tag": "name: !!python/object/apply:os.system ['touch /tmp/agentix-pwned']\nprogram: /bin/true\n",
    "a markup name": "name: '<img src=x onerror=alert(1)>'\nprogram: /bin/true\n",
    "two manifests at once": None,
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_hostile_manifest_text_is_refused_and_spawns_nothing(api: Api, attack: str) -> None:
    n, seq = api.agent_count(), api.audit_size()
    # the module's kernel is shared: agents an earlier test started may exit meanwhile
    known = {a["agent_id"] for a in api.daemon.client.call("agent.list", all=True)["agents"]}
    body = ({"manifest_text": "name: a\nprogram: /bin/true\n", "manifest": {"name": "b", "program": "/bin/true"}}
            if ATTACKS[attack] is None else {"manifest_text": ATTACKS[attack]})
    r = api.post("agent.spawn", body)    # answered (the alias bomb is not expanded: it would never return)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] in ("invalid_request", "invalid_params")
    assert api.agent_count() == n
    after = api.audit_after(seq)
    assert not [e for e in after if e["kind"] == "agent.spawned"], after
    assert not [e for e in after if e["kind"] == "agent.exited" and e["agent"] not in known], after
    assert all(e["data"].get("ok") is False for e in after if e["kind"] == "agent.spawn"), after
    assert not os.path.exists("/tmp/agentix-pwned")
