"""Raft consensus as a library: a pure core, and the runtime that hosts many groups."""
