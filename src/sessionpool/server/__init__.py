"""The HTTP server: app factory, authentication, TLS, settings, lifespan and ``serve``.

``create_app`` builds the ASGI application around an engine; ``serve_command`` is the
``sessionpool serve`` command (flags from ``add_serve_arguments``). The names are imported on
first use, so that a light module here (keys, TLS) does not load the application.
"""

from typing import TYPE_CHECKING

from sessionpool._lazy import exports

if TYPE_CHECKING:
    from sessionpool.server.app import create_app
    from sessionpool.server.cli import serve_command
    from sessionpool.server.flags import add_serve_arguments
    from sessionpool.server.settings import ServerSettings, load_settings

__all__ = ["ServerSettings", "add_serve_arguments", "create_app", "load_settings", "serve_command"]

__getattr__ = exports(
    __name__,
    {
        "create_app": "sessionpool.server.app",
        "add_serve_arguments": "sessionpool.server.flags",
        "serve_command": "sessionpool.server.cli",
        "ServerSettings": "sessionpool.server.settings",
        "load_settings": "sessionpool.server.settings",
    },
)
