"""``python -m relay.host``: run the host daemon without the ``relay`` CLI."""

import sys

from relay.host.cli import main

sys.exit(main())
