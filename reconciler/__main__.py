"""``python -m reconciler`` runs the CLI."""

from reconciler.cli import console_main

console_main()
