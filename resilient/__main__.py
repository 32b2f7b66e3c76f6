"""``python -m resilient`` runs the CLI."""

import sys

from resilient._cli import main

sys.exit(main())
