"""Domain types: plain data shared by every layer.

They import only the primitives (errors, secrets, diagnostics) and the standard library.
"""
