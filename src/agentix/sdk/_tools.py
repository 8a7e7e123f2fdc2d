"""``k.tools``: one typed method per kernel tool, made from the kernel's tool schemas.

The kernel publishes every tool's name, description and JSON Schema (``tool.list``). On the
first use of ``k.tools`` the SDK asks for them once and makes, for each tool whose name and
argument names are Python identifiers, a real method with a real signature::

    k.tools.file_read("notes.txt")                  # required arguments: positional or keyword
    k.tools.file_read("notes.txt", limit=100)       # optional ones: keyword only
    help(k.tools.file_read)                         # the description and arguments, from the schema

Only the arguments a caller gives are sent (an omitted optional argument is the kernel's
default). A name the kernel has no tool for raises ``NoSuchTool`` (``not_found``, and an
``AttributeError``) naming the tools there are — never a call. ``call(name, args)`` reaches
any tool by name (``mcp:server.tool`` names are not identifiers).

Nothing heavy is imported to do this (every agent imports the SDK): the methods are built
from source text with ``exec``, the way ``collections.namedtuple`` builds its classes.
"""

from __future__ import annotations

from agentix.core.errors import NoSuchTool

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from agentix.sdk._client import Connection

__all__ = ["Tools", "build_tools"]

#: Python keywords and the soft ones that cannot name a parameter (``keyword`` costs an import)
_RESERVED = frozenset("""False None True and as assert async await break class continue def del
elif else except finally for from global if import in is lambda nonlocal not or pass raise
return try while with yield self""".split())
#: what ``Tools`` itself defines: a tool with one of these names is reached with ``call``
_OWN = frozenset({"call", "list", "names"})


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<default>"


#: an optional argument that was not given (it is not sent)
UNSET: Any = _Unset()


def _ok_name(name: object) -> bool:
    return isinstance(name, str) and name.isidentifier() and name not in _RESERVED \
        and not name.startswith("_")


def _type_text(prop: dict[str, Any]) -> str:
    t = prop.get("type", "any")
    text = " | ".join(t) if isinstance(t, list) else str(t)
    if text == "array" and isinstance(prop.get("items"), dict) and "type" in prop["items"]:
        text = f"array of {prop['items']['type']}"
    return text


def _doc(tool: dict[str, Any], required: list[str], optional: list[str]) -> str:
    props = tool.get("input_schema", {}).get("properties", {})
    lines = [str(tool.get("description") or f"The {tool['name']} tool.")]
    if required or optional:
        lines += ["", "Arguments:"]
    for arg in required + optional:
        p = props.get(arg) or {}
        extra = f": {p['description']}" if p.get("description") else ""
        lines.append(f"    {arg} ({_type_text(p)}{'' if arg in required else ', optional'}){extra}")
    lines += ["", f"Calls tool {tool['name']!r} (``tool.call``); refusals raise the typed errors "
              "of ``agentix.sdk.errors``."]
    return "\n".join(lines)


def _method(tool: dict[str, Any]) -> Callable[..., Any] | None:
    """The method for one tool, or None if its name or an argument name cannot be one."""
    name = tool.get("name")
    schema = tool.get("input_schema") or {}
    props = schema.get("properties") or {}
    if not _ok_name(name) or name in _OWN or not isinstance(props, dict):
        return None
    req = schema.get("required") or []
    if not all(_ok_name(a) for a in props) or not all(isinstance(r, str) for r in req):
        return None
    required = [a for a in props if a in req] + [a for a in req if a not in props and _ok_name(a)]
    if len(required) != len(req):
        return None
    optional = [a for a in props if a not in req]
    more = schema.get("additionalProperties", True) is not False
    params = [*required, *(["*"] if optional else []), *(f"{a}=UNSET" for a in optional),
              *(["**more"] if more else [])]
    given = ", ".join(f"{a!r}: {a}" for a in required + optional)
    src = (f"def {name}(self, {', '.join(params)}):\n"
           f"    args = {{{given}}}\n"
           f"    args = {{k: v for k, v in args.items() if v is not UNSET}}\n"
           + ("    args.update(more)\n" if more else "")
           + f"    return self.call({name!r}, args)\n")
    ns: dict[str, Any] = {"UNSET": UNSET}
    exec(compile(src, f"<agentix tool {name}>", "exec"), ns)  # noqa: S102 - names checked above
    fn = ns[name]
    fn.__doc__ = _doc(tool, required, optional)
    fn.__qualname__ = f"Tools.{name}"
    return fn


class Tools:
    """The kernel's tools as methods (``k.tools.NAME(...)``), plus ``call``, ``list`` and
    ``names``. Built by ``build_tools`` from the kernel's schemas; not constructed directly."""

    _conn: Connection
    _listed: list[dict[str, Any]]

    def call(self, name: str, args: dict[str, Any] | None = None) -> Any:
        """Call tool ``name`` with ``args`` (any tool, by its name)."""
        return self._conn.call("tool.call", {"name": name, "args": args or {}})

    def list(self) -> list[dict[str, Any]]:
        """Every tool the kernel has: ``{name, description, input_schema}``."""
        return [dict(t) for t in self._listed]

    def names(self) -> list[str]:
        """The names of the kernel's tools."""
        return [t["name"] for t in self._listed]

    def __getattr__(self, name: str) -> Any:
        # only reached for a name that is not a method: never a call
        if name.startswith("_"):
            raise AttributeError(name)
        known = self.names()
        hint = (f"call(\"{name}\", {{...}})" if name in known else
                "the kernel has: " + ", ".join(known))
        raise NoSuchTool(f"no tool method {name!r}; {hint}", tool=name)

    def __dir__(self) -> list[str]:
        return sorted({*object.__dir__(self), *(n for n in self.names() if _ok_name(n))})

    def __repr__(self) -> str:
        return f"<agentix tools: {', '.join(self.names())}>"


def build_tools(conn: Connection) -> Tools:
    """A ``Tools`` for the kernel behind ``conn``: one ``tool.list`` call, then one method
    per tool (a class of its own, so the methods show in ``help`` and ``dir``)."""
    listed = conn.call("tool.list")["tools"]
    methods: dict[str, Any] = {}
    for tool in listed:
        fn = _method(tool)
        if fn is not None:
            methods[fn.__name__] = fn
    cls = type("Tools", (Tools,), {"__slots__": (), **methods})
    obj = object.__new__(cls)
    object.__setattr__(obj, "_conn", conn)
    object.__setattr__(obj, "_listed", listed)
    return obj  # type: ignore[no-any-return]
