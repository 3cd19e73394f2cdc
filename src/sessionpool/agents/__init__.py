"""The agents service: agent definitions, conversations, runs and containers on sessionpool.

One internal model (``types``) behind two HTTP faces (Assistants v2, and Responses with
Conversations and Containers). The agent loop (``loop``) sends a conversation to any
OpenAI-compatible chat-completions endpoint with the code interpreter offered as a function,
runs each call in the conversation's container (a sessionpool session), and records the steps.
Everything except live interpreter state is kept in SQLite or PostgreSQL (``store``, typed by
``records``).

``service.AgentService`` holds agents, conversations, messages and runs, and composes the rest:
``files`` (file objects), ``containers`` (containers, their files and sessions) and ``events``
(runs in flight and their event streams). Each module imports only those below it; ``loop``
gets the collaborators it needs, never the service.
"""

from sessionpool.agents.config import AgentsConfig
from sessionpool.agents.service import AgentService

__all__ = ["AgentService", "AgentsConfig"]
