"""``agentix audit``: read, verify and prove the kernel's tamper-evident audit log.

``tail``, ``prove`` and ``head`` ask the running kernel; ``verify`` asks the kernel if one
runs and otherwise reads ``$AGENTIX_HOME/agentix.db`` read-only; ``export`` always reads the
file; ``check-proof`` needs only the proof and the public key (offline). ``verify`` and
``check-proof`` exit 1 when they find tampering (see docs/audit.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from agentix.cli.render import for_terminal
from agentix.sdk.errors import KernelNotRunning

__all__ = ["audit"]

KEY_PUB = "keys/audit_ed25519.pub"


def _line(e: dict[str, Any]) -> str:
    from agentix.cli.views import clock as _clock

    taint = f" [{','.join(e['taint'])}]" if e.get("taint") else ""
    return (f"{e['seq']:>7} {_clock(e['ts'])} {e['kind']:<22} {e['agent'] or '-'}{taint} "
            f"{json.dumps(e['data'], default=str, ensure_ascii=False)}")


def _public_key(home: Path, key: str | None) -> bytes:
    """Raw Ed25519 public key from hex text, a file holding hex, or the home's key file."""
    if key is None:
        path = home / KEY_PUB
    elif Path(key).exists():
        path = Path(key)
    else:
        path = None
    text = path.read_text().strip() if path is not None else str(key).strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        from agentix.cli.views import EXIT_USAGE, fail

        fail(f"not an Ed25519 public key (64 hex digits): {path or key}", EXIT_USAGE)
    return raw


@click.group()
def audit() -> None:
    """The tamper-evident audit log (docs/audit.md)."""


@audit.command()
@click.option("--follow", "-f", is_flag=True, help="then keep printing new entries")
@click.option("--agent", help="only this agent's entries")
@click.option("--kind", help="only this kind (or prefix, e.g. 'capability')")
@click.option("-n", "limit", type=int, default=20, show_default=True, help="entries to show")
@click.option("--json", "as_json", is_flag=True, help="one JSON entry per line")
@click.pass_obj
def tail(obj: Any, follow: bool, agent: str | None, kind: str | None, limit: int,
         as_json: bool) -> None:
    """Print the last entries of the audit log."""
    after = 0
    while True:  # after 0 = "the last n"; then everything after the last seq seen
        entries = obj.kernel.audit_tail(after, agent=agent, kind=kind,
                                        limit=limit if after == 0 else 1000,
                                        wait=5.0 if follow else 0)
        for e in entries:
            after = max(after, e["seq"])
            click.echo(json.dumps(e, ensure_ascii=False) if as_json else for_terminal(_line(e)))
        if not follow:
            return


@audit.command()
@click.option("--offline", is_flag=True, help="read the database file even if a kernel runs")
@click.option("--heads", "heads_file", type=click.Path(exists=True, path_type=Path),
              help="JSONL of signed heads kept elsewhere, trusted in addition to stored ones")
@click.option("--key", help="the kernel's public key (hex or a file); default from the home")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON (for scripts)")
@click.pass_obj
def verify(obj: Any, offline: bool, heads_file: Path | None, key: str | None,
           as_json: bool) -> None:
    """Verify the whole chain and the signed heads; exit 1 on any tampering."""
    from agentix.sdk.audit import SignedHead, verify_file

    rep: dict[str, Any] | None = None
    if not offline and heads_file is None and key is None:
        try:
            rep = obj.kernel.audit_verify()
        except KernelNotRunning:
            rep = None
    if rep is None:
        heads = []
        if heads_file is not None:
            heads = [SignedHead.from_json(json.loads(x)) for x in
                     heads_file.read_text().splitlines() if x.strip()]
        rep = verify_file(obj.home / "agentix.db", _public_key(obj.home, key), heads).to_json()
    if as_json:
        click.echo(json.dumps(rep))
    elif rep["ok"]:
        click.echo(f"ok: {rep['entries']} entries verified"
                   + (f", signed head of size {rep['head_size']} matches"
                      if rep.get("head_size") else ", no signed head yet"))
    else:
        click.echo(f"TAMPERED: first bad seq {rep['first_bad_seq']} ({rep['reason']}): "
                   f"{rep['detail']}", err=True)
    sys.exit(0 if rep["ok"] else 1)


@audit.command()
@click.argument("seq", type=int)
@click.option("-o", "output", type=click.Path(path_type=Path), help="write the proof here")
@click.pass_obj
def prove(obj: Any, seq: int, output: Path | None) -> None:
    """An inclusion proof of entry SEQ under a freshly signed tree head."""
    proof = obj.kernel.audit_prove(seq)
    text = json.dumps(proof, indent=2, ensure_ascii=False)
    if output is None:
        click.echo(text)
    else:
        output.write_text(text + "\n")


@audit.command("check-proof")
@click.argument("proof_file", type=click.File("rb"))
@click.option("--key", help="the kernel's public key (hex or a file); default from the home")
@click.option("--json", "as_json", is_flag=True, help="print the verdict as JSON (for scripts)")
@click.pass_obj
def check_proof(obj: Any, proof_file: Any, key: str | None, as_json: bool) -> None:
    """Check an inclusion proof offline with only the public key; exit 1 if invalid."""
    from agentix.sdk.audit import check_proof
    from agentix.sdk.errors import InvalidRequest

    try:
        proof = json.loads(proof_file.read())
        e = check_proof(proof, _public_key(obj.home, key))
    except (InvalidRequest, ValueError) as exc:
        msg = exc.message if isinstance(exc, InvalidRequest) else str(exc)
        if as_json:
            click.echo(json.dumps({"valid": False, "reason": msg}))
        else:
            click.echo(f"INVALID: {msg}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps({"valid": True, "seq": e.seq, "kind": e.kind,
                               "tree_size": proof["tree_size"]}))
        return
    click.echo(f"valid: entry {e.seq} ({e.kind}) is in the signed log of "
               f"{proof['tree_size']} entries (head {proof['head']['timestamp']})")


@audit.command()
@click.option("-o", "output", type=click.Path(path_type=Path), help="file (default stdout)")
@click.pass_obj
def export(obj: Any, output: Path | None) -> None:
    """Export every entry, one JSON object per line (JSONL; docs/audit.md section 2).

    Reads $AGENTIX_HOME/agentix.db directly (no kernel needed)."""
    from agentix.sdk.audit import export_file

    if output is None:
        n = export_file(obj.home / "agentix.db", sys.stdout.buffer)
        sys.stdout.flush()
    else:
        with open(output, "wb") as f:
            n = export_file(obj.home / "agentix.db", f)
    click.echo(f"exported {n} entries", err=True)


@audit.command()
@click.option("--no-sign", is_flag=True, help="only report size and root")
@click.pass_obj
def head(obj: Any, no_sign: bool) -> None:
    """The current tree head, signed by the kernel (and stored)."""
    click.echo(json.dumps(obj.kernel.audit_head(sign=not no_sign), indent=2))
