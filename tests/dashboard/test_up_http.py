"""``agentix up --http ADDR`` says where the dashboard is and how to get a token to sign in."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import httpx

from conftest import short_tmp
from http_api.conftest import free_port

AGENTIX = [sys.executable, "-m", "agentix.cli.main"]


def _cli(home, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGENTIX, "--home", str(home), *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_up_with_http_prints_the_dashboard_url_and_how_to_get_a_token(isolation_mode: str) -> None:
    tmp = short_tmp()
    home = tmp / "h"
    port = free_port()
    try:
        r = _cli(home, "up", "--isolation", isolation_mode, "--http", f"127.0.0.1:{port}")
        assert r.returncode == 0, r.stderr
        out = r.stdout + r.stderr
        url = f"http://127.0.0.1:{port}/"
        assert f"dashboard: {url}" in out, out
        assert "agentix tokens create NAME --role operator" in out, out
        page = httpx.get(url, timeout=10)
        assert page.status_code == 200 and "agentix dashboard" in page.text
        # the token the message points at signs in
        tok = _cli(home, "tokens", "create", "first", "--role", "operator").stdout.strip()
        me = httpx.get(url + "v1/whoami", headers={"Authorization": f"Bearer {tok}"}, timeout=10)
        assert me.status_code == 200 and me.json()["role"] == "operator"
        assert _cli(home, "down").returncode == 0
        # --json says the same for scripts
        r = _cli(home, "up", "--isolation", isolation_mode, "--http", f"127.0.0.1:{port}", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["dashboard"] == url
        assert _cli(home, "down").returncode == 0
    finally:
        try:
            os.kill(int((home / "agentixd.pid").read_text()), signal.SIGKILL)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            pass
        shutil.rmtree(tmp, ignore_errors=True)
