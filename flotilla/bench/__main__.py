"""`python -m flotilla.bench ...`: the same as `flotilla bench ...`."""

from __future__ import annotations

import argparse
import logging
import sys

from flotilla.bench import add_arguments, main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="flotilla bench", description="Load etcd v3 endpoints (Flotilla or etcd).")
    parser.add_argument("-v", "--verbose", action="store_true")
    add_arguments(parser)
    ns = parser.parse_args()
    logging.basicConfig(level=logging.INFO if ns.verbose else logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    sys.exit(main(ns))
