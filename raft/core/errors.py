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
      CodecError(ValueError)          bytes this build cannot decode: a peer's message (drop
                                      it), or a log entry, stored record or snapshot (a bug or a
                                      broken disk). One class for every package (raft's transport,
                                      placement's log and records, the shard's log and engine)
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


class CodecError(RaftError, ValueError):
    """Bytes this build cannot decode (a peer's message or chunk, a log entry,
    a stored record, a snapshot): corruption, a newer format, or a bug on the
    sending side. What to do depends on where the bytes came from (a peer's
    stream is dropped; an entry of a replicated log stops the process), not
    on the class: every package raises this one."""


class RaftInvariantError(AssertionError):
    """A broken invariant: a bug. The process must stop."""
