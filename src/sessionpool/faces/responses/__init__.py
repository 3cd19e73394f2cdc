"""The Responses face: OpenAI Responses, Conversations and Containers (and Foundry's agents).

``install_responses(app)`` mounts the routes under ``/v1`` and
``/api/projects/{project}/openai/v1``; ``wire`` translates between that wire and the agents
service's internal model (``sessionpool.agents.types``).
"""

from sessionpool.faces.responses.routes import install_responses

__all__ = ["install_responses"]
