"""A two-agent CrewAI crew run under agentix, each crew agent an agentix agent of its own.

The crew's logic runs here; each crew agent's model calls and tools run in a child agentix
agent (``member``) holding only that crew agent's grants: the researcher may echo, the
writer may write in its workspace. The kernel checks every call against the member's grants.

    agentix run examples/crewai_team/crew.yaml --message "a report on pond frogs"

CrewAI is not an agentix extra (its pins clash with the mcp and openai-agents extras): run
this with a kernel whose Python has crewai installed, such as ``.venv-crewai/bin/agentix up``
(``make crewai-venv`` builds it; docs/integrations.md).
"""

from crewai import Agent, Crew, Process, Task

from agentix.adapters.crewai import AgentixLLM, agentix_crewai_tools, member
from agentix.sdk import agent

k = agent.connect()
msg = k.recv(timeout=60)
topic = msg.body if msg is not None and isinstance(msg.body, str) else "frogs"

researcher_k = member("researcher", ["model: sim:engine", "tool: echo"])
writer_k = member("writer", ["model: sim:engine", "file_write: /workspace/*"])

researcher = Agent(role="researcher", goal=f"Collect facts about {topic}", backstory="A careful researcher.",
                   llm=AgentixLLM(kernel=researcher_k), tools=agentix_crewai_tools(kernel=researcher_k),
                   allow_delegation=False, verbose=False)
writer = Agent(role="writer", goal="Write the report to report.md", backstory="A concise writer.",
               llm=AgentixLLM(kernel=writer_k), tools=agentix_crewai_tools(kernel=writer_k),
               allow_delegation=False, verbose=False)
crew = Crew(agents=[researcher, writer], process=Process.sequential, verbose=False, tasks=[
    Task(description=f"Collect facts about {topic}.", expected_output="a list of facts", agent=researcher),
    Task(description="Write the report.", expected_output="where the report is", agent=writer),
])
result = crew.kickoff()
grants = {"researcher": researcher_k.info()["grants"], "writer": writer_k.info()["grants"]}
researcher_k.close()
writer_k.close()
k.exit({"answer": result.raw, "tasks": [t.raw for t in result.tasks_output], "grants": grants})
