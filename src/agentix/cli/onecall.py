"""Commands that are one kernel call each, written as rows of a table instead of a function
apiece (``packages``, ``keys``, ``trust``, ``approve``, ``caps ls``, ``mcp servers``,
``tokens`` ...).

A ``CallRow`` names the command, the kernel method its parameters go to (or a function of
the SDK handle and the parameters, where the names differ), its click parameters, and how
to show the reply to a person. ``command(row)`` builds the click command: it makes the call,
then prints the reply as JSON under ``--json`` (for scripts) or through ``show``. A row with
no ``show`` prints JSON always and takes no ``--json`` (``packages inspect``, ``trust list``).
Errors are not caught here: the main group turns an SDK error into its line and exit code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from agentix.cli.views import dump_json, kernel_of

if TYPE_CHECKING:
    from agentix.sdk import Kernel

__all__ = ["JSON_HELP", "CallRow", "Params", "command"]

JSON_HELP = "print the result as JSON (for scripts)"

#: a command's parameters, by their click names
Params = dict[str, Any]


@dataclass(frozen=True)
class CallRow:
    name: str
    #: ``"package.sign"``: called with the command's parameters as they are named;
    #: a function ``(kernel, params) -> reply`` where they are not
    method: str | Callable[[Kernel, Params], Any]
    help: str
    params: Sequence[click.Parameter] = ()
    #: prints the reply for a person; None: the reply is printed as JSON, always
    show: Callable[[Any, Params], None] | None = None
    #: the reply's field that is the result (``{"keys": [...]}``: ``"keys"``)
    field: str | None = None


def command(row: CallRow) -> click.Command:
    """The click command of ``row``."""

    def callback(**params: Any) -> None:
        as_json = params.pop("as_json", True)
        k = kernel_of()
        reply = k.call(row.method, **params) if isinstance(row.method, str) else row.method(k, params)
        if row.field is not None:
            reply = reply[row.field]
        if as_json or row.show is None:
            dump_json(reply)
        else:
            row.show(reply, params)

    params = list(row.params)
    if row.show is not None:
        params.append(click.Option(["--json", "as_json"], is_flag=True, help=JSON_HELP))
    return click.Command(row.name, callback=callback, params=params, help=row.help)
