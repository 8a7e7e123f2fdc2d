"""``agent.submit_goal``: run a goal through the built-in orchestrator.

    agent.submit_goal {goal, output?, manifest?}   operator
        -> {agent_id, name, workspace, output}

Rules:

* The root agent is spawned from the bootstrap manifest, ``agentix/agents/bootstrap.yaml``
  read as *data* through ``importlib.resources`` (the kernel imports no code from
  ``agentix.agents``), or from ``manifest`` (an object) when given. Its program is always
  ``module:agentix.agents.orchestrator``; its first message is ``{"goal": goal}``.
* One workspace per goal: the agent's own fresh workspace; the orchestrator writes its
  results to ``output/`` there.
* When the root exits, ``output/`` is copied (regular files and directories, symlinks
  skipped) to ``output`` (an absolute directory path, created if missing) and
  ``goal.finished {output, files, reason}`` is recorded against the root. Without
  ``output``, ``goal.finished`` is recorded with ``output: null``.
"""

from __future__ import annotations

import asyncio
import os
import stat
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from agentix.core.errors import InvalidRequest
from agentix.core.manifest import parse_manifest
from agentix.kernel.dispatch import Call, EventSink, Pipeline
from agentix.kernel.inference import InferenceService
from agentix.kernel.methods import method
from agentix.kernel.spawn import Spawner
from agentix.sandbox import safewalk
from agentix.tools.thread_work import in_thread

if TYPE_CHECKING:
    from agentix.kernel.process import AgentRecord

__all__ = ["ORCHESTRATOR", "bootstrap_data", "copy_output", "register"]

ORCHESTRATOR = "module:agentix.agents.orchestrator"
MAX_GOAL = 64 * 1024


def bootstrap_data() -> dict[str, Any]:
    """The built-in bootstrap manifest as a dict (read as a data file, not imported)."""
    text = resources.files("agentix.agents").joinpath("bootstrap.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise InvalidRequest("the built-in bootstrap manifest is not a mapping", field="manifest")
    return data


#: what one goal may copy out of its workspace's output/
OUTPUT_BOUNDS = safewalk.Bounds(max_bytes=256 * 1024**2, max_entries=10_000, max_depth=32)


def copy_output(src: Path, dest: Path) -> list[str]:
    """Copy ``src`` (an agent's ``output/``) into ``dest``; symlinks and special files are skipped.

    The agent controls ``src``: it is read through the safe walker (``sandbox/safewalk.py``),
    fd-relative from the workspace without following a link, non-blocking, regular files and
    directories only, bounded by ``OUTPUT_BOUNDS`` (over it raises ``OSError``). ``dest``
    is the operator's; existing files there are overwritten, never through a link.
    """
    dest.mkdir(parents=True, exist_ok=True)
    try:
        ws = safewalk.open_dir(src.parent, follow=False)
    except safewalk.WalkError:
        return []
    try:
        try:
            fd, st = safewalk.open_beneath(ws, src.name)
        except safewalk.WalkError:
            return []  # no output/, or output/ is a link or a special file
        try:
            if not stat.S_ISDIR(st.st_mode):
                return []
            out = safewalk.open_dir(dest)
            try:
                res = safewalk.copy_entry(fd, st, out, ".", bounds=OUTPUT_BOUNDS, special="skip",
                                          overwrite=True, rel=".")
            except safewalk.WalkError as err:
                raise OSError(f"{err.path}: {err.why}") from None
            finally:
                os.close(out)
        finally:
            os.close(fd)
    finally:
        os.close(ws)
    return sorted(f.removeprefix("./") for f in res.files)


def register(pipeline: Pipeline, *, events: EventSink, spawner: Spawner, inference: InferenceService) -> None:
    tasks: set[asyncio.Task[None]] = set()

    async def finish(rec: AgentRecord, output: Path | None) -> None:
        await rec.exited.wait()
        data: dict[str, Any] = {"output": None, "files": [],
                                "reason": rec.exit.reason if rec.exit else None}
        if output is not None:
            try:
                data["files"] = await in_thread(lambda: copy_output(rec.workspace / "output", output))
                data["output"] = str(output)
            except OSError as err:
                data["error"] = f"copying output/ to {output} failed: {err.strerror or err}"
        await events.record("goal.finished", rec.agent_id, data)

    async def submit_goal(call: Call) -> dict[str, Any]:
        goal = call.params.get("goal")
        if not isinstance(goal, str) or not goal.strip():
            raise InvalidRequest('"goal" must be a non-empty string', field="goal")
        if len(goal.encode()) > MAX_GOAL:
            raise InvalidRequest(f'"goal" is longer than {MAX_GOAL} bytes', field="goal")
        output = call.params.get("output")
        out_path: Path | None = None
        if output is not None:
            if not isinstance(output, str) or not os.path.isabs(output):
                raise InvalidRequest('"output" must be an absolute directory path', field="output")
            out_path = Path(output)
            if out_path.exists() and not out_path.is_dir():
                raise InvalidRequest(f"output {output} exists and is not a directory", field="output")
        override = call.params.get("manifest")
        if override is not None and not isinstance(override, dict):
            raise InvalidRequest('"manifest" must be a manifest object', field="manifest")
        data = dict(override) if override is not None else bootstrap_data()
        data["program"] = ORCHESTRATOR
        if override is None:
            # the built-in bootstrap thinks with the kernel's default model (or its own): it is
            # granted exactly that model (an override manifest names its own model grants)
            data["capabilities"] = [*data.get("capabilities", []),
                                    f"model: {data.get('model') or inference.config.default_model}"]
        manifest = parse_manifest(data)
        rec = await spawner.spawn(manifest, message={"goal": goal})
        await events.record("goal.submitted", rec.agent_id, {
            "goal": goal[:500], "name": rec.name, "output": output})
        task = asyncio.create_task(finish(rec, out_path))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return {"agent_id": rec.agent_id, "name": rec.name, "workspace": str(rec.workspace),
                "output": output, "model": _model(manifest.model)}

    def _model(model: str | None) -> dict[str, Any] | None:
        from agentix.llm.inference_config import describe_model

        try:
            return describe_model(inference.config, model)
        except Exception:   # no provider configured: think will say so when it is called
            return None

    pipeline.register(method("agent.submit_goal", submit_goal, operator=True))
