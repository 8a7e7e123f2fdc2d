"""An OpenAI Agents SDK program run as an agentix agent: its model is ``think``, its tools are
kernel tools, and its handoff to a specialist spawns the specialist as a CHILD agentix agent
with narrower grants (the kernel refuses a handoff that would widen them).

    agentix run examples/openai_agents/triage.yaml --message "write the report"

(``model: sim:engine`` is the scripted model of the tests, turns.yaml; name your own.)

The first message is the goal (a string), or ``{"goal": ..., "specialist_grants": [...]}``.
"""

from agents import Agent, RunConfig, Runner
from agents.exceptions import UserError

from agentix.adapters.openai_agents import AgentixModelProvider, agentix_function_tools, spawn_handoff
from agentix.sdk import agent

k = agent.connect()
msg = k.recv(timeout=60)
body = msg.body if msg is not None else "write the report"
goal = body.get("goal", "") if isinstance(body, dict) else str(body)
grants = body.get("specialist_grants") if isinstance(body, dict) else None

specialist = spawn_handoff("specialist", {
    "name": "specialist", "program": "handoff/specialist.py",  # copied from this program's folder
    # narrower than this agent's own grants: the model, and writes in its own workspace
    "capabilities": grants or ["model: sim:engine", "file_write: /workspace/*"],
})
triage = Agent(name="triage", instructions="Check in with echo, then hand writing tasks to the specialist.",
               tools=agentix_function_tools(["echo"]), handoffs=[specialist])
config = RunConfig(model_provider=AgentixModelProvider())
try:
    result = Runner.run_sync(triage, goal, run_config=config)
except UserError as err:
    k.exit({"error": str(err)})

# a second, streamed run: text arrives through think's stream
async def sign_off() -> list[str]:
    streamed = Runner.run_streamed(Agent(name="closer", instructions="Sign off."), "sign off", run_config=config)
    pieces = []
    async for ev in streamed.stream_events():
        if ev.type == "raw_response_event" and ev.data.type == "response.output_text.delta":
            pieces.append(ev.data.delta)
    return pieces

import asyncio  # noqa: E402

pieces = asyncio.run(sign_off())
k.exit({"answer": result.final_output, "last_agent": result.last_agent.name,
        "items": [i.type for i in result.new_items], "sign_off": "".join(pieces)})
