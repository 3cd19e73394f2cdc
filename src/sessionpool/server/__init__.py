"""The HTTP server: app factory, authentication, TLS, settings, lifespan and ``serve``.

``create_app`` builds the ASGI application around an engine; ``serve_command`` is the
``sessionpool serve`` command (flags from ``add_serve_arguments``).
"""

from sessionpool.server.app import create_app
from sessionpool.server.cli import add_serve_arguments, serve_command
from sessionpool.server.settings import ServerSettings, load_settings

__all__ = ["ServerSettings", "add_serve_arguments", "create_app", "load_settings", "serve_command"]
