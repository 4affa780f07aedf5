"""``python -m relay`` runs the CLI."""

import sys

from relay.cli import main

sys.exit(main())
