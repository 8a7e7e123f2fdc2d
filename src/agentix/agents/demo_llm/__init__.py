"""The demo row "ten agents need the LLM": a small agent that keeps calling ``think``."""
