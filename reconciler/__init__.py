"""linkctl: outgoing OAuth 2.0 links managed the GitOps way.

The flow is load → validate → plan → apply → store, with ``oauth`` (flows,
provider presets, keeper) beside it and thin ``cli``/``server`` edges on top.
"""

__version__ = "0.1.0"
