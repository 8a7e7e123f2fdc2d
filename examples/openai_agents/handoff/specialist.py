"""The specialist a triage agent hands to: a second OpenAI Agents SDK agent, run as a child
agentix agent with its own (narrower) grants. Its task is its first message."""

from agents import Agent, RunConfig, Runner

from agentix.adapters.openai_agents import AgentixModelProvider, agentix_function_tools
from agentix.sdk import agent

k = agent.connect()
msg = k.recv(timeout=60)
task = str(msg.body) if msg is not None else ""
writer = Agent(name="specialist", instructions="Write what you are asked to a file.",
               tools=agentix_function_tools())
result = Runner.run_sync(writer, task, run_config=RunConfig(model_provider=AgentixModelProvider()))
k.exit({"answer": result.final_output, "grants": k.info()["grants"]})
