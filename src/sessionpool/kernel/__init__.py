"""Code that runs inside the sandbox. Imports nothing from the server."""
