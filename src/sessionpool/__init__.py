"""sessionpool: secure, stateful, fast Python code-interpreter sessions for LLM agents."""

__version__ = "0.1.0"
