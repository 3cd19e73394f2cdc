"""The agents service: agent definitions, conversations, runs and containers on sessionpool.

One internal model (``types``) behind two HTTP faces (Assistants v2, and Responses with
Conversations and Containers). The agent loop (``loop``) sends a conversation to any
OpenAI-compatible chat-completions endpoint with the code interpreter offered as a function,
runs each call in the conversation's container (a sessionpool session), and records the steps.
Everything except live interpreter state is kept in SQLite or PostgreSQL (``store``, typed by
``records``).

``service.AgentService`` is what tenants share; ``AgentService.for_tenant`` gives one tenant's
view (``service.TenantAgents``), which holds the tenant's agents, conversations, messages and
runs, and composes the rest: ``files`` (file objects) and ``containers`` (containers, their
files and sessions), both scoped to the tenant too, and ``events`` (runs in flight and their
event streams). Each module imports only those below it; ``loop`` gets the collaborators it
needs, never the service.
"""

from typing import TYPE_CHECKING

from sessionpool._lazy import exports

if TYPE_CHECKING:
    from sessionpool.agents.config import AgentsConfig
    from sessionpool.agents.service import AgentService, TenantAgents

__all__ = ["AgentService", "AgentsConfig", "TenantAgents"]

# on first use: the server's settings read ``config`` alone, without the store and the loop
__getattr__ = exports(
    __name__,
    {
        "AgentsConfig": "sessionpool.agents.config",
        "AgentService": "sessionpool.agents.service",
        "TenantAgents": "sessionpool.agents.service",
    },
)
