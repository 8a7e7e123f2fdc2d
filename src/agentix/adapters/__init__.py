"""Framework adapters: run an agent written for LangChain/LangGraph, CrewAI or the OpenAI
Agents SDK inside an agentix sandbox, its model calls going through ``think`` (scheduled,
budgeted, audited) and its tools through ``tool.call`` (checked, charged, audited).

Each adapter is a module of its own that imports its framework when it is imported (the
framework is an optional extra: ``pip install agentix[langchain]``, ``[openai-agents]``;
crewai is installed apart, docs/integrations.md); ``import agentix`` and
``import agentix.adapters`` import none of them.

    agentix.adapters.langchain       AgentixChatModel, agentix_tools
    agentix.adapters.openai_agents   AgentixModel, AgentixModelProvider, agentix_function_tools,
                                     spawn_handoff
    agentix.adapters.crewai          AgentixLLM, agentix_crewai_tools, member

They run INSIDE agent processes and use only the agent SDK (``agentix.sdk.agent``): an
adapter has no way around the kernel, it only translates.
"""

from __future__ import annotations

__all__: list[str] = []
