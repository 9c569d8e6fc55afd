"""The `flotilla` command and, later, the Python client. Wiring only."""

from __future__ import annotations

__version__ = "0.0.1"
