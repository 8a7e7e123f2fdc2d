"""OpenAPI 3.1 is generated from the method table's param schemas: every operator method is
in it with its schema, and every one of them is reachable over HTTP."""

from __future__ import annotations

import jsonschema
import pytest

from agentix.kernel.config import KernelConfig
from agentix.kernel.home import Home
from agentix.kernel.kernel import KernelRoot
from agentix.kernel.method_params import PARAMS


@pytest.fixture(scope="module")
def operator_methods(tmp_path_factory) -> set[str]:
    home = Home(tmp_path_factory.mktemp("openapi"))
    k = KernelRoot(home, KernelConfig(backend="plain", isolation="degraded"))
    return {s.name for s in k.pipeline.specs() if s.operator}


def test_every_operator_method_has_a_params_schema(operator_methods):
    assert operator_methods - set(PARAMS) == set(), "add their schemas to kernel/method_params.py"
    assert set(PARAMS) - operator_methods == set(), "schemas for methods that do not exist"
    for name, schema in PARAMS.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["type"] == "object", name


def test_openapi_lists_every_operator_method_with_its_schema(api, operator_methods):
    doc = api.http().get("/openapi.json").json()  # public metadata: no token needed
    assert doc["openapi"] == "3.1.0"
    called = {p.removeprefix("/v1/call/"): v["post"] for p, v in doc["paths"].items() if p.startswith("/v1/call/")}
    assert set(called) == operator_methods
    for name, op in called.items():
        assert op["requestBody"]["content"]["application/json"]["schema"] == PARAMS[name], name
        assert op["x-agentix-method"] == name
    # agent system calls are not operator methods: not in the document
    assert not {"tool.call", "think", "sys.info", "ipc.send"} & set(called)
    assert {"/v1/events", "/v1/agents/{agent_id}/logs"} <= set(doc["paths"])
    # the read-only flag is the table's durability
    assert called["agent.list"]["x-agentix-read-only"] is True
    assert called["agent.spawn"]["x-agentix-read-only"] is False
    assert any(p["name"] == "Idempotency-Key" for p in called["agent.spawn"]["parameters"])


def test_every_operator_method_is_reachable(api, operator_methods):
    """POST each method with no params: it reaches its handler (a result or the handler's own
    refusal of missing params), never method_not_found. kernel.shutdown is tested by itself."""
    reached = {}
    for name in sorted(operator_methods - {"kernel.shutdown"}):
        r = api.post(name, {})
        body = r.json()
        assert r.headers["content-type"] == "application/json"
        if r.status_code != 200:
            assert body["error"]["code"] != "method_not_found", name
            assert r.status_code in (400, 403, 404, 409), (name, r.status_code, body)
        reached[name] = r.status_code
    assert reached["agent.list"] == 200 and reached["kernel.info"] == 200
    assert reached["agent.spawn"] == 400  # no manifest: the handler's invalid_request


def test_shutdown_over_http_stops_the_kernel(fresh_api):
    r = fresh_api.post("kernel.shutdown", {})
    assert r.status_code == 200 and r.json()["stopping"] is True
    fresh_api.daemon.proc.wait(timeout=30)
    assert fresh_api.daemon.proc.returncode == 0


def test_agent_system_calls_are_not_reachable_over_http(api):
    before = api.audit_size()
    for name in ("tool.call", "think", "sys.info", "ipc.send", "agent.spawn_child", "no.such"):
        r = api.post(name, {})
        assert r.status_code == 404 and r.json()["error"]["code"] == "method_not_found", name
    assert api.audit_size() == before


def _api_md_params() -> dict[str, str]:
    """docs/api.md's method tables: method name -> the text of its params cell."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    rows: dict[str, str] = {}
    for line in doc.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        params = cells[2] if len(cells) > 3 and cells[1] in ("operator", "agent", "both") else cells[1]
        for name in re.findall(r"`([a-z0-9_]+\.[a-z0-9_]+)`", cells[0]):
            rows.setdefault(name, params)
    return rows


def test_docs_api_md_names_every_param_of_every_schema():
    """The schemas and the API reference describe the same params (one source of truth checked
    both ways: a param in a schema must be documented; an operator method must have a row)."""
    rows = _api_md_params()
    for name, schema in sorted(PARAMS.items()):
        assert name in rows, f"docs/api.md has no row for {name}"
        missing = [p for p in schema.get("properties", {}) if f"`{p}`" not in rows[name]]
        assert not missing, f"docs/api.md's row for {name} does not name {missing}"
