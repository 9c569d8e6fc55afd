"""`python -m flotilla ...`: the same entry point as the `flotilla` console script."""

from __future__ import annotations

import sys

from flotilla.cli import main

if __name__ == "__main__":
    sys.exit(main())
