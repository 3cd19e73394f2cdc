"""Cluster mode: one endpoint over the session engines of many machines, on Ray.

``remote`` is the gateway's side (pools and sessions whose kernels run on other nodes),
``node`` a node's engine behind its internal HTTP API, ``directory`` the placement of sessions
on nodes, ``raylink`` everything that touches Ray, ``wire`` the node API's bodies. Nothing here
imports Ray until a cluster is joined: a single server never does (docs/cluster.md).
"""
