"""Hosts as Linux network namespaces on one bridge, for a cluster spread
over "machines" on one box (tests/integration/test_netns_cluster.py).

`Lab` makes a bridge in the root namespace (with an address of its own:
the test process is the operator's host), and per host a namespace joined to
the bridge by a veth pair, with its own address on the lab's /24
(10.77.N.0/24: N is the first octet whose subnet no interface of the root
namespace uses, so two labs never share one). A process runs on a host with
`ip netns exec NS argv...` (iproute2 execs the command: its pid is the
Popen's, so a signal goes to the process itself).

Faults, per host: `cut(host)` sets the bridge side of its veth down (every
packet to or from the host is lost), `heal(host)` sets it up again;
`netem(host, "delay 20ms 5ms loss 1%")` shapes what leaves the host (and what
the bridge sends it) with `tc netem`, which needs the kernel's sch_netem:
`netem_available()` says whether this kernel has it.

Every name the lab makes carries its tag (`fl<pid>`), and `close()` deletes
every namespace, veth and the bridge it made, whatever state they are in;
it is idempotent, for use in a `finally`. It kills no process: the harness
that started them stops them first (a namespace with a process in it would
outlive `ip netns del`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

__all__ = ["Host", "Lab", "LabUnavailable", "lab_unavailable_reason"]


class LabUnavailable(RuntimeError):
    """Namespaces cannot be made here (not root, no `ip`, or the kernel refused)."""


def lab_unavailable_reason() -> str | None:
    """Why this machine cannot host a Lab (None: it can, as far as we can tell without trying)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root (`ip netns add`); run as root (the CI does)"
    if shutil.which("ip") is None:
        return "no `ip` command: install iproute2 (scripts/test.sh does, as root, where apt-get exists)"
    return None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise LabUnavailable(f"{' '.join(argv)}: exit {out.returncode}: {out.stderr.strip() or out.stdout.strip()}")
    return out


@dataclass
class Host:
    name: str
    netns: str
    address: str
    veth_host: str
    """The bridge side of the host's veth pair (in the root namespace)."""
    veth_ns: str
    """The host's side, inside its namespace."""


@dataclass
class Lab:
    tag: str = field(default_factory=lambda: f"fl{os.getpid() % 100_000}")
    hosts: dict[str, Host] = field(default_factory=dict)
    subnet: str = ""
    """The lab's /24 without its last octet, e.g. "10.77.0"."""
    _bridge_made: bool = False
    _next_octet: int = 2

    @property
    def bridge(self) -> str:
        return f"{self.tag}br"

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge."""
        return f"{self.subnet}.1"

    def open(self) -> None:
        """Make the bridge (LabUnavailable, saying why, if that fails)."""
        reason = lab_unavailable_reason()
        if reason:
            raise LabUnavailable(reason)
        self.subnet = self._free_subnet()
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        self._bridge_made = True
        _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")

    @staticmethod
    def _free_subnet() -> str:
        used = _run("ip", "-4", "-o", "addr", "show").stdout + _run("ip", "-4", "route", "show").stdout
        for octet in range(256):
            prefix = f"10.77.{octet}."
            if prefix not in used:
                return prefix[:-1]
        raise LabUnavailable("every 10.77.N.0/24 is in use on this machine")

    def add_host(self, name: str) -> Host:
        """A namespace on the bridge with the next address of the subnet."""
        assert self._bridge_made, "open() first"
        assert name not in self.hosts and len(name) <= 4, name
        octet = self._next_octet
        self._next_octet += 1
        h = Host(
            name=name,
            netns=f"{self.tag}-{name}",
            address=f"{self.subnet}.{octet}",
            veth_host=f"{self.tag}h{name}"[:15],
            veth_ns=f"{self.tag}n{name}"[:15],
        )
        self.hosts[name] = h  # before making anything, so close() removes what was made
        _run("ip", "netns", "add", h.netns)
        _run("ip", "link", "add", h.veth_host, "type", "veth", "peer", "name", h.veth_ns)
        _run("ip", "link", "set", h.veth_ns, "netns", h.netns)
        _run("ip", "link", "set", h.veth_host, "master", self.bridge, "up")
        _run("ip", "-n", h.netns, "addr", "add", f"{h.address}/24", "dev", h.veth_ns)
        _run("ip", "-n", h.netns, "link", "set", "lo", "up")
        _run("ip", "-n", h.netns, "link", "set", h.veth_ns, "up")
        return h

    def argv(self, host: str, argv: list[str]) -> list[str]:
        """argv run on host (inside its namespace)."""
        return ["ip", "netns", "exec", self.hosts[host].netns, *argv]

    # -- faults ----------------------------------------------------------------------------
    def cut(self, host: str) -> None:
        """Every packet to or from host is lost (its link to the bridge is down)."""
        _run("ip", "link", "set", self.hosts[host].veth_host, "down")

    def heal(self, host: str) -> None:
        _run("ip", "link", "set", self.hosts[host].veth_host, "up")

    def netem(self, host: str, spec: str) -> None:
        """`tc netem <spec>` on both ends of host's link (what it sends and
        what it is sent); replaces any earlier spec. LabUnavailable if tc fails."""
        h = self.hosts[host]
        _run("ip", "netns", "exec", h.netns, "tc", "qdisc", "replace", "dev", h.veth_ns, "root", "netem", *spec.split())
        _run("tc", "qdisc", "replace", "dev", h.veth_host, "root", "netem", *spec.split())

    def netem_clear(self, host: str) -> None:
        h = self.hosts[host]
        _run("ip", "netns", "exec", h.netns, "tc", "qdisc", "del", "dev", h.veth_ns, "root", check=False)
        _run("tc", "qdisc", "del", "dev", h.veth_host, "root", check=False)

    def netem_available(self) -> str | None:
        """None if `tc netem` works on this kernel, else why not (tried on the
        first host's link, then removed)."""
        if shutil.which("tc") is None:
            return "no `tc` command (iproute2)"
        h = next(iter(self.hosts.values()))
        out = _run("ip", "netns", "exec", h.netns, "tc", "qdisc", "add", "dev", h.veth_ns, "root", "netem", "delay", "1ms", check=False)
        if out.returncode != 0:
            return f"`tc qdisc add ... netem` failed ({out.stderr.strip()}): this kernel lacks sch_netem (modprobe sch_netem)"
        self.netem_clear(h.name)
        return None

    # -- clean-up --------------------------------------------------------------------------
    def close(self) -> list[str]:
        """Delete every veth, namespace and the bridge this lab made (those
        that exist); returns what could not be deleted (empty: all gone)."""
        left: list[str] = []
        for h in self.hosts.values():
            _run("ip", "link", "del", h.veth_host, check=False)  # deletes the pair
            _run("ip", "netns", "del", h.netns, check=False)
        if self._bridge_made:
            _run("ip", "link", "del", self.bridge, check=False)
        links = _run("ip", "-o", "link", "show", check=False).stdout
        spaces = _run("ip", "netns", "list", check=False).stdout
        for h in self.hosts.values():
            if h.netns in spaces.split():
                left.append(f"netns {h.netns}")
        if self._bridge_made and f" {self.bridge}:" in links:
            left.append(f"bridge {self.bridge}")
        return left
