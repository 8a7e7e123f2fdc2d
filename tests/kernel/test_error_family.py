"""One error family: one class per code, the code back from the class, the CLI's exit code
from the code, docs/api.md's table the same as ``CODES``, and errors that never change
after they are built.

The exit-code tests run the real CLI (both its quick path and its click path) against a
socket that answers every request with one error code, the way a kernel does.
"""

from __future__ import annotations

import re
import socket
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

import agentix.rpc.framing
import agentix.sandbox.cgroups
import agentix.sandbox.confine
import agentix.sandbox.landlock
import agentix.sandbox.seccomp  # noqa: F401 - registers the sandbox errors in the family
from agentix.cli import views
from agentix.core import errors
from agentix.core.errors import (
    CLASSES,
    CODES,
    LOCAL_CODES,
    AgentixError,
    CapabilityDenied,
    InternalError,
    IsolationUnavailable,
    KernelNotRunning,
    NoSuchTool,
    NotFound,
    RefusedError,
    RequestError,
    UnknownError,
    error_from_code,
)

ALL_CODES = sorted([*CODES, *LOCAL_CODES])
DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def _family() -> list[type[AgentixError]]:
    out, todo = [], [AgentixError]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return out


@pytest.mark.parametrize("code", ALL_CODES)
def test_every_code_has_exactly_one_class_and_comes_back(code):
    cls = CLASSES[code]
    assert cls.code == code
    owners = [c for c in _family() if c.__dict__.get("code") == code and c not in errors._ABSTRACT]
    assert owners == [cls], f"{code} is claimed by {owners}"
    err = error_from_code(code, "msg", {"error": code, "field": "x"})
    assert type(err) is cls
    assert err.code == code and err.message == "msg" and err.data == {"field": "x"}
    if code in CODES:
        wire = err.to_rpc()
        assert wire["code"] == CODES[code] and wire["data"]["error"] == code
        back = error_from_code(wire["data"]["error"], wire["message"], wire["data"])
        assert type(back) is cls and back.data == err.data


def test_the_table_names_every_code_and_nothing_else():
    assert set(CLASSES) == set(CODES) | set(LOCAL_CODES)
    assert not set(CODES) & set(LOCAL_CODES)
    assert len(set(CODES.values())) == len(CODES)  # numeric codes are unique too


def test_every_family_member_is_a_kind_of_the_class_of_its_code():
    """A subclass travels as its parent's code: the class the client rebuilds is one the
    raised error already was (``LandlockError`` is an ``IsolationUnavailable``)."""
    abstract = {AgentixError, RequestError, RefusedError, UnknownError}
    for cls in _family():
        if cls in abstract or cls.__module__.startswith(("tests", "test_")):
            continue
        assert cls.code in CLASSES, f"{cls.__name__} has code {cls.code!r}, which has no class"
        assert issubclass(cls, CLASSES[cls.code]), (cls, CLASSES[cls.code])


def test_an_internal_error_is_an_internal_error_not_a_missing_kernel():
    """The bug: the last subclass registered for internal_error (the SDK's KernelNotRunning)
    won, so every kernel bug read as "no kernel running" (exit 3)."""
    err = error_from_code("internal_error", "boom")
    assert type(err) is InternalError and not isinstance(err, KernelNotRunning)
    assert views.exit_code_for(err) == views.EXIT_INTERNAL


def test_a_code_from_a_newer_kernel_keeps_its_code():
    err = error_from_code("quota_melted", "new", {"error": "quota_melted", "n": 1})
    assert isinstance(err, UnknownError) and err.code == "quota_melted" and err.data == {"n": 1}
    assert views.exit_code_for(err) == views.EXIT_INTERNAL
    assert UnknownError.code == "internal_error"  # the class is untouched by the instance


@pytest.mark.parametrize("cls", [AgentixError, RequestError, RefusedError])
def test_a_family_is_not_an_error_to_raise(cls):
    with pytest.raises(TypeError, match="CLASSES"):
        cls("what went wrong?")


def test_the_sandbox_and_framing_errors_are_in_the_family():
    from agentix.rpc.framing import FrameTooLarge
    from agentix.sandbox.cgroups import CgroupError
    from agentix.sandbox.confine import ConfineError
    from agentix.sandbox.landlock import LandlockError
    from agentix.sandbox.seccomp import SeccompError

    for cls, layer in ((LandlockError, "landlock"), (SeccompError, "seccomp"), (CgroupError, "cgroups")):
        err = cls("it failed", errno=1)
        assert isinstance(err, IsolationUnavailable) and isinstance(err, OSError)
        assert err.errno == 1 and err.data == {"layer": layer, "errno": 1}
        assert err.to_rpc()["data"]["error"] == "isolation_unavailable"
    c = ConfineError("seccomp", "no filter")
    assert isinstance(c, IsolationUnavailable) and c.data == {"layer": "seccomp", "why": "no filter"}
    f = FrameTooLarge(10)
    assert f.code == "invalid_request" and f.data == {"limit": 10} and "10 bytes" in f.message


def test_no_such_tool_is_not_found_and_an_attribute_error():
    err = NoSuchTool("no tool named 'x'", tool="x")
    assert isinstance(err, NotFound) and isinstance(err, AttributeError)
    assert err.code == "not_found" and err.data == {"tool": "x"}


# -- errors are values: a copy, never a change

labels = st.lists(st.sampled_from(["web:a", "web:b", "file:c", "msg:d"]), max_size=3)


@given(labels, labels, st.dictionaries(st.sampled_from(["a", "b", "tool"]), st.integers(), max_size=3))
def test_evolve_and_tainted_copy_and_leave_the_original_as_it_was(first, more, extra):
    orig = CapabilityDenied("no", tool="t").tainted(*first)
    before = (orig.message, dict(orig.data), orig.taint, orig.args)
    new = orig.evolve(message="changed", taint=more, **extra)
    assert (orig.message, orig.data, orig.taint, orig.args) == before
    assert type(new) is CapabilityDenied and new is not orig
    assert new.message == "changed" and new.args == ("changed",)
    assert new.data == {"tool": "t", **extra}
    assert set(new.taint) == set(first) | set(more)
    kept = orig.with_default(tool="other")
    assert kept is orig and orig.data["tool"] == "t"


def test_evolve_keeps_the_traceback_and_the_cause():
    try:
        try:
            raise KeyError("inner")
        except KeyError as k:
            raise InternalError("outer") from k
    except InternalError as err:
        orig, new = err, err.evolve(x=1)
    assert isinstance(new.__cause__, KeyError) and new.__cause__ is orig.__cause__
    assert new.__traceback__ is orig.__traceback__


# -- the CLI's exit code follows the code, on both of its paths


def test_every_code_has_an_exit_code():
    assert set(views.EXIT_FOR_CODE) == set(ALL_CODES)


class _ErrorKernel:
    """A Unix socket at ``home/agentixd.sock`` that answers every JSON-RPC request with the
    error ``code`` (as the kernel's RPC server frames it); ``code=None`` closes at once."""

    def __init__(self, home: Path, code: str | None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(home / "agentixd.sock"))
        self.sock.listen(8)
        self.code = code
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.code is None:
                conn.close()
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        import json

        conn.settimeout(30)
        buf = b""
        with conn:
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    req = json.loads(line)
                    err = error_from_code(self.code, f"the kernel says {self.code}")
                    reply = {"jsonrpc": "2.0", "id": req.get("id"), "error": err.to_rpc()}
                    conn.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
        self.sock.close()


def _quick(home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from agentix.cli import quick

    monkeypatch.setattr(sys, "argv", ["agentix", "--home", str(home), "info"])
    with pytest.raises(SystemExit) as exc:
        quick.main()
    return int(exc.value.code or 0), capsys.readouterr().err


def _click(home: Path) -> tuple[int, str]:
    from agentix.cli.main import cli

    r = CliRunner().invoke(cli, ["--home", str(home), "tools"])
    return r.exit_code, r.output


@pytest.mark.parametrize("code", sorted(CODES))
def test_the_cli_exit_code_follows_the_kernels_error_code(code, tmp_path, monkeypatch, capsys):
    srv = _ErrorKernel(tmp_path, code)
    try:
        quick_rc, quick_err = _quick(tmp_path, monkeypatch, capsys)
        click_rc, click_out = _click(tmp_path)
    finally:
        srv.close()
    want = views.EXIT_FOR_CODE[code]
    assert (quick_rc, click_rc) == (want, want), (quick_err, click_out)
    assert f"the kernel says {code}" in quick_err and f"the kernel says {code}" in click_out
    if code != "internal_error":
        assert "no kernel" not in quick_err + click_out


def test_no_kernel_exits_3_and_a_broken_connection_exits_10(tmp_path, monkeypatch, capsys):
    assert _quick(tmp_path, monkeypatch, capsys)[0] == views.EXIT_NO_KERNEL == 3
    assert _click(tmp_path)[0] == views.EXIT_NO_KERNEL
    srv = _ErrorKernel(tmp_path, None)
    try:
        rc, err = _quick(tmp_path, monkeypatch, capsys)
        assert _click(tmp_path)[0] == rc == views.EXIT_FOR_CODE["connection_closed"] == views.EXIT_INTERNAL
    finally:
        srv.close()


# -- docs/api.md lists exactly the codes, with their numbers and classes


def _doc_rows() -> dict[str, tuple[int, str]]:
    text = DOC.read_text(encoding="utf-8")
    table = text[text.index("| data.error | code | SDK class | meaning |"):]
    rows: dict[str, tuple[int, str]] = {}
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert cells[0] not in rows, f"docs/api.md lists {cells[0]} twice"
        rows[cells[0]] = (int(cells[1]), re.sub(r"`", "", cells[2]))
    return rows


def test_docs_api_md_lists_every_code_with_its_number_and_class():
    rows = _doc_rows()
    assert set(rows) == set(CODES), sorted(set(rows) ^ set(CODES))
    for code, (num, cls) in rows.items():
        assert num == CODES[code], code
        assert cls == CLASSES[code].__name__, code
    text = " ".join(DOC.read_text(encoding="utf-8").split())
    for code in LOCAL_CODES:  # the SDK's own codes are explained below the table
        assert f"`{code}` (`{CLASSES[code].__name__}`" in text


def test_every_wire_code_has_an_http_status():
    from agentix.rpc.http import STATUS

    assert set(STATUS) == set(CODES)
