"""The Responses face: OpenAI Responses, Conversations and Containers (and Foundry's agents).

Its routes are mounted under ``/v1``, ``/openai/v1`` and ``/api/projects/{project}/openai/v1``;
``parse`` reads the requests, ``wire`` builds the objects and ``stream`` the events, all in
terms of the agents service's internal model (``sessionpool.agents.types``).
"""

from sessionpool.faces.responses.routes import ResponsesFace

__all__ = ["ResponsesFace"]
