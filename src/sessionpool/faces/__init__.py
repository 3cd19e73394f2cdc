"""Faces: one public wire format each, on top of the same engine.

A face owns its wire models, its routes and the translation between them and the engine's types
(``sessionpool.types``); it knows nothing about sandboxes. The server mounts every face, applies
authentication in front of them and renders errors (``sessionpool.faces.http``).

- ``aca``: the Azure Container Apps dynamic-sessions data plane, both API families.
"""
