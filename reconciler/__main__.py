"""``python -m reconciler`` runs the CLI."""

import sys

from reconciler.cli import main

sys.exit(main())
