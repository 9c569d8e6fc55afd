"""Test tools shipped with the library (as etcd ships rafttest): the simulated
network, the safety checker, the datadriven runner and the interaction
environment for golden scripts; for the multi-group host, a simulated disk and
log store (SimDisk, SimLogStore), virtual time (VirtualTimeLoop, LoopClock,
run_virtual) and the host simulation (HostSim)."""

from __future__ import annotations

from raft.testing.datadriven import Arg, Args, TestData, run_file
from raft.testing.hostsim import FaultyNetwork, FaultyTransport, HostSim
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
from raft.testing.simdisk import InlineExecutor, SimDisk, SimLogStore
from raft.testing.virtualtime import LoopClock, VirtualTimeLoop, run_virtual

__all__ = [
    "Arg",
    "Args",
    "FaultyNetwork",
    "FaultyTransport",
    "HostSim",
    "InlineExecutor",
    "InteractionEnv",
    "LoopClock",
    "PersistRecord",
    "SafetyChecker",
    "SafetyViolation",
    "SimDisk",
    "SimLogStore",
    "SimNetwork",
    "SimStorage",
    "TestData",
    "VirtualTimeLoop",
    "check_safety",
    "decode_app_state",
    "encode_app_state",
    "format_entry",
    "format_message",
    "format_ready",
    "run_file",
    "run_interaction_file",
    "run_virtual",
]
