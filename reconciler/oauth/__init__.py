"""OAuth 2.0 client side: provider presets, token endpoint client, flows, the keeper.

``providers`` is pure data (importable by validation and planning); ``client``
is the only code that talks HTTP to providers; ``flows`` obtains first tokens;
``keeper`` refreshes them.
"""
