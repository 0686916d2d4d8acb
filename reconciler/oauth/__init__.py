"""OAuth 2.0 client side: provider presets, discovery, token endpoint client, flows.

``providers`` is pure data (importable by validation and planning); ``client``
is the only code that talks HTTP to providers; ``flows`` obtains first tokens;
:mod:`reconciler.keeper` refreshes them.
"""
