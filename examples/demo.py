"""The demo script of the deployment guide: ``resilient demo`` from Python.

Run: python examples/demo.py [--json]
"""

import sys

from resilient._cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
