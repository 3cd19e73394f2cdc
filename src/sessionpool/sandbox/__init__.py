"""Sandbox backends: the zygote, the jail, cgroups and workspaces."""
