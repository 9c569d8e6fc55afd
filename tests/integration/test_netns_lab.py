"""The network-namespace lab of tests/integration/test_netns_cluster.py, in
the default run (a second or two): two hosts on the bridge talk TCP over
their own addresses, a cut host is unreachable until healed, and close()
leaves no namespace, veth or bridge behind. Skips where namespaces cannot
be made (not root, no `ip`)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.integration.netns import Lab, LabUnavailable, lab_unavailable_reason

pytestmark = pytest.mark.integration

# Run on host b: accept one connection on its address, answer "pong", exit.
SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], 7000)); s.listen(1); s.settimeout(20)
print("listening", flush=True)
c, _ = s.accept(); c.sendall(b"pong"); c.close()
"""
# Run on host a: connect to b (timeout 2 s), print what it says or the error.
CLIENT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], 7000), timeout=2); print(c.recv(4).decode())
except OSError as exc:
    print("error", type(exc).__name__)
"""


@pytest.fixture
def lab() -> Iterator[Lab]:
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(f"no network namespaces: {reason}")
    lab = Lab()
    try:
        try:
            lab.open()
            lab.add_host("a")
            lab.add_host("b")
        except LabUnavailable as exc:
            pytest.skip(f"cannot make network namespaces here: {exc}")
        yield lab
    finally:
        assert lab.close() == []


def ping(lab: Lab) -> str:
    b = lab.hosts["b"].address
    with subprocess.Popen(lab.argv("b", [sys.executable, "-c", SERVER, b]), stdout=subprocess.PIPE, text=True) as server:
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "listening"
            out = subprocess.run(lab.argv("a", [sys.executable, "-c", CLIENT, b]), capture_output=True, text=True, timeout=30)
            return out.stdout.strip()
        finally:
            server.kill()
            server.wait(timeout=10)


def test_hosts_talk_over_the_bridge_and_a_cut_host_is_unreachable(lab: Lab) -> None:
    a, b = lab.hosts["a"], lab.hosts["b"]
    assert a.address != b.address and a.address.startswith("10.77.")
    assert ping(lab) == "pong"
    lab.cut("b")
    assert ping(lab).startswith("error")
    lab.heal("b")
    assert ping(lab) == "pong"


def test_close_removes_everything() -> None:
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(f"no network namespaces: {reason}")
    lab = Lab(tag=f"flz{os.getpid() % 10_000}")
    try:
        lab.open()
        lab.add_host("x")
    except LabUnavailable as exc:
        lab.close()
        pytest.skip(f"cannot make network namespaces here: {exc}")
    assert lab.close() == []
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert lab.tag not in names and lab.tag not in links
