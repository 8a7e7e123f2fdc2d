"""The audit page shows the chain's verify status: green on the intact log, failing (with the
first bad entry named) once an entry is edited in the database behind the kernel's back."""

from __future__ import annotations

import sqlite3
from typing import Any

from http_api.conftest import Api


def test_the_audit_page_shows_a_tampered_log_as_failing(dash: Api, tab: Any, shots: Any) -> None:
    dash.daemon.run("lines.py", "3", name="writer")
    t = tab().sign_in(dash.operator).go("#/audit")
    t.page.wait_for_selector("#verify[data-ok]")
    assert t.page.get_attribute("#verify", "data-ok") == "true"   # the check can pass
    t.page.wait_for_selector("#audit-rows tr")
    t.page.screenshot(path=str(shots / "audit.png"))
    # an inclusion proof downloads as JSON for the entry asked
    with t.page.expect_download() as dl:
        t.page.locator("#audit-rows tr[data-seq='2'] button[data-action=prove]").click()
    import json

    proof = json.loads(open(dl.value.path()).read())
    assert proof["entry"]["seq"] == 2 and proof["path"]
    # edit entry 2 in the store, as an intruder with the database file would
    c = sqlite3.connect(dash.daemon.home / "agentix.db", isolation_level=None, timeout=10)
    body = c.execute("SELECT body FROM audit_entries WHERE seq=2").fetchone()[0]
    c.execute("UPDATE audit_entries SET body=? WHERE seq=2", (body.replace(b"}", b" }", 1),))
    c.close()
    t.page.locator("#verify button", has_text="Verify again").click()
    t.page.wait_for_selector("#verify[data-ok=false]")
    failure = t.page.locator("#verify-failure").inner_text()
    assert "first bad entry: 2" in failure and "edited" in failure
    t.page.screenshot(path=str(shots / "audit-tampered.png"))
