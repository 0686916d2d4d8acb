"""Domain types: plain data shared by every layer (imports only errors, secrets and the standard library)."""
