"""``agentix a2a serve``: publish an agent over A2A (docs/integrations.md)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from agentix.cli.views import EXIT_USAGE, Ctx, fail

__all__ = ["a2a"]


@click.group()
def a2a() -> None:
    """A2A: publish an agentix agent to A2A clients."""


@a2a.command()
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="the address to listen on")
@click.option("--port", default=8700, show_default=True, type=int, help="the port to listen on")
@click.option("--url", default=None, help="the URL clients reach this server at (for the agent card); "
              "default http://HOST:PORT/")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="a file holding the bearer token clients must send (else $AGENTIX_A2A_TOKEN)")
@click.option("--clients-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="a TOML file naming each client and its bearer token ([clients] NAME = \"TOKEN\"); a "
                   "client's tasks are its own")
@click.option("--push-allow", "push_allow", multiple=True, metavar="HOST",
              help="a host (name or address) clients' push-notification webhooks may reach even when it is "
                   "loopback or private (repeatable); others must be public")
@click.option("--push-timeout", default=10.0, show_default=True, type=float,
              help="seconds one push notification may take")
@click.option("--max-body", default=256 * 1024, show_default=True, type=int, help="largest request body, bytes")
@click.option("--timeout", default=300.0, show_default=True, type=float, help="seconds one task may run")
@click.option("--stream-output", is_flag=True, default=False,
              help="stream what the agent writes to its log to the client, as the task's `output` artifact")
@click.pass_obj
def serve(ctx: Ctx, manifest: Path, host: str, port: int, url: str | None, token_file: Path | None,
          clients_file: Path | None, push_allow: tuple[str, ...], push_timeout: float,
          max_body: int, timeout: float, stream_output: bool) -> None:
    """Serve MANIFEST's agent as an A2A server: each task is one run of the agent, spawned
    through the kernel as the `a2a` face (audited `by: a2a`). Needs a running kernel and the
    `a2a` extra; every request but the agent card needs a client's bearer token. Clients may
    register push-notification webhooks; the kernel delivers them (never to a loopback,
    private or link-local address unless --push-allow names the host)."""
    try:
        import yaml

        from agentix.a2a.server import A2AConfigError, A2AServerConfig, build_app
    except ImportError as err:
        fail(f"the A2A server needs the optional a2a extra ({err.name or err} is missing): "
             "pip install 'agentix[a2a]'", EXIT_USAGE)
    token = token_file.read_text().strip() if token_file else os.environ.get("AGENTIX_A2A_TOKEN", "")
    clients: dict[str, str] = {}
    if clients_file is not None:
        import tomllib

        try:
            doc = tomllib.loads(clients_file.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            fail(f"{clients_file}: not TOML: {err}", EXIT_USAGE)
        clients = doc.get("clients") if isinstance(doc.get("clients"), dict) else None  # type: ignore[assignment]
        if not clients:
            fail(f'{clients_file}: needs a [clients] table of NAME = "TOKEN"', EXIT_USAGE)
    data = yaml.safe_load(manifest.read_text())
    if not isinstance(data, dict):
        fail(f"{manifest}: a manifest must be a mapping", EXIT_USAGE)
    try:
        cfg = A2AServerConfig(home=ctx.home, manifest=data, token=token, clients=clients,
                              url=url or f"http://{host}:{port}/", base_dir=manifest.resolve().parent,
                              max_body=max_body, timeout=timeout, stream_output=stream_output,
                              push_allow=push_allow, push_timeout=push_timeout)
    except A2AConfigError as err:
        fail(str(err), EXIT_USAGE)
    # with the slow-client guard every HTTP face has (rpc/slow_clients.py)
    from agentix.rpc.slow_clients import SlowClientLimits, serve_blocking

    try:
        limits = SlowClientLimits.from_env(os.environ)
    except ValueError as err:
        fail(str(err), EXIT_USAGE)
    click.echo(f"serving {data['name']} over A2A at {cfg.url} (agent card: {cfg.url.rstrip('/')}"
               "/.well-known/agent-card.json)", err=True)
    serve_blocking(build_app(cfg), host, port, limits)
