"""Test tools shipped with the library (as etcd ships rafttest): the simulated
network, the safety checker, the datadriven runner and the interaction
environment for golden scripts."""

from __future__ import annotations

from raft.testing.datadriven import Arg, Args, TestData, run_file
from raft.testing.interaction import InteractionEnv, run_interaction_file
from raft.testing.invariants import SafetyChecker, SafetyViolation, check_safety
from raft.testing.network import (
    PersistRecord,
    SimNetwork,
    SimStorage,
    decode_app_state,
    encode_app_state,
    format_entry,
    format_message,
    format_ready,
)

__all__ = [
    "Arg",
    "Args",
    "InteractionEnv",
    "PersistRecord",
    "SafetyChecker",
    "SafetyViolation",
    "SimNetwork",
    "SimStorage",
    "TestData",
    "check_safety",
    "decode_app_state",
    "encode_app_state",
    "format_entry",
    "format_message",
    "format_ready",
    "run_file",
    "run_interaction_file",
]
