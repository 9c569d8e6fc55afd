"""Errors of the Raft library.

    FlotillaError
      RaftError                       expected outcomes the caller handles
        ProposalDropped               no leader, transfer in progress, conf change pending, ...
        StepLocalMessage              a local-only message type came in through step()
        StepPeerNotFound              a response from a peer not in the configuration
        ConfigInvalid                 Config failed validation
        StorageError
          Compacted                   the requested index is below the first available one
          Unavailable                 the requested index is above the last one
          SnapshotTemporarilyUnavailable
    RaftInvariantError(AssertionError)  a bug: fail-stop, never caught

Storage write or sync failures are not RaftErrors: they are fatal, and
recovery is a restart from disk.
"""

from __future__ import annotations


class FlotillaError(Exception):
    """Root of every error Flotilla raises on purpose."""


class RaftError(FlotillaError):
    pass


class ProposalDropped(RaftError):
    pass


class StepLocalMessage(RaftError):
    pass


class StepPeerNotFound(RaftError):
    pass


class ConfigInvalid(RaftError):
    pass


class StorageError(RaftError):
    pass


class Compacted(StorageError):
    pass


class Unavailable(StorageError):
    pass


class SnapshotTemporarilyUnavailable(StorageError):
    pass


class RaftInvariantError(AssertionError):
    """A broken invariant: a bug. The process must stop."""
