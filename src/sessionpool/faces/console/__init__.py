"""The web console at ``/console``: pools, sessions, cells, files, agent runs and operations.

The page and its script are static files (built from ``console/`` at the repository's root by
npm and esbuild into ``static/``), public like ``/docs``: they hold no data. Everything the page
shows it reads with the API key the operator typed, through the public API with that key's
scopes: the console can do nothing its key could not do with curl. This face adds the two
listings no wire API has (``routes.py``): pools with their sessions and figures, and the
tenant's threads.
"""

from sessionpool.faces.console.routes import PUBLIC_PATHS, ConsoleFace

__all__ = ["PUBLIC_PATHS", "ConsoleFace"]
