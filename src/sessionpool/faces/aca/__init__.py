"""The Azure Container Apps dynamic-sessions data plane, as its existing clients speak it.

Two API families share the pool endpoint: ``2024-02-02-preview`` (``code/execute``,
``files/upload``, the ``properties`` envelope), which every code-interpreter client uses, and the
``executions`` family of ``2024-10-02-preview`` and later (flat resources, shell commands, session
management). See ``docs/configuration.md`` for how endpoints and keys are configured.
"""

from sessionpool.faces.aca.routes import AcaFace

__all__ = ["AcaFace"]
