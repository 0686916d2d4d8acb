"""``python -m reconciler.cli`` runs the CLI (same as ``python -m reconciler``)."""

from reconciler.cli import console_main

console_main()
