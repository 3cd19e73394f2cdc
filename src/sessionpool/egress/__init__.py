"""Egress: the policies of what sessions may reach, and the proxy that enforces them outside
the sandbox (``proxy``), resolving names and checking addresses itself (``addresses``), with a
per-server CA for the domains whose requests carry secrets (``ca``)."""
