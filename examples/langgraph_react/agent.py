"""A LangGraph ReAct agent, unchanged but for the model and tools it is given, run as an
agentix program: its model calls are ``think`` (scheduled, budgeted, audited) and its tools are
kernel tools (checked against its grants, audited).

    agentix run examples/langgraph_react/agent.yaml --message "write a haiku to haiku.txt"

(``model: sim:engine`` in agent.yaml is the scripted model of the tests, turns.yaml; name your
own model there, e.g. ``model: openai:gpt-4o-mini``.)

The goal arrives as the agent's first message; the graph's final answer is its result.
"""

from langgraph.prebuilt import create_react_agent

from agentix.adapters.langchain import AgentixChatModel, agentix_tools
from agentix.sdk import agent

k = agent.connect()
msg = k.recv(timeout=60)
goal = msg.body if msg is not None and isinstance(msg.body, str) else "say hello"

model = AgentixChatModel(max_tokens=400)
graph = create_react_agent(model, agentix_tools(), prompt="You are a careful assistant. Use the tools.")
state = graph.invoke({"messages": [("user", goal)]})

# one more turn, streamed: the text arrives piece by piece through think's stream
pieces = [c.content for c in model.stream([("user", "one word to sign off")]) if c.content]
k.exit({"answer": state["messages"][-1].content,
        "steps": [m.type for m in state["messages"]],
        "tool_results": [m.content for m in state["messages"] if m.type == "tool"],
        "sign_off": "".join(pieces), "pieces": len(pieces)})
