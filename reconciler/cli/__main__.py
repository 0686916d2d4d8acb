"""``python -m reconciler.cli`` runs the CLI (same as ``python -m reconciler``)."""

import sys

from reconciler.cli import main

sys.exit(main())
