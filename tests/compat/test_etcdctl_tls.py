"""TLS as etcd users type it: `flotilla playground --tls` (a throw-away CA,
mutual TLS between every process, the router's client port on TLS with
--client-cert-auth) driven with the real etcdctl 3.4 and its --cacert,
--cert, --key flags; a second router started by hand with the client flags
but without --client-cert-auth; certificate rotation under load.

Every wait has a deadline; etcdctl runs are bounded in time.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from flotilla import certs
from flotilla.procs import REPO, wait_until

pytestmark = pytest.mark.integration

ETCDCTL = shutil.which("etcdctl")
if ETCDCTL is None:
    pytest.skip("etcdctl is not installed (Debian: apt-get install etcd-client)", allow_module_level=True)

READY_TIMEOUT_S = 90


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return env


class Lines:
    """A process's stdout, line by line, read with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.seen: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def next(self, timeout: float) -> str | None:
        try:
            line = self._q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout}s; so far: {self.seen}") from None
        if line is not None:
            self.seen.append(line)
        return line

    def close(self, timeout: float = 10) -> None:
        """Once the process closed its stdout: drain it, close our end."""
        while self.next(timeout) is not None:
            pass
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def until(self, prefix: str, timeout: float) -> str:
        while True:
            line = self.next(timeout)
            if line is None:
                raise AssertionError(f"stdout ended before {prefix!r}: {self.seen}")
            if line.startswith(prefix):
                return line


@dataclass
class Ctl:
    """etcdctl against an endpoint with the given flags (TLS ones or none)."""

    endpoint: str
    flags: tuple[str, ...] = ()
    dial_timeout: str = "5s"

    def argv(self, *args: str) -> list[str]:
        assert ETCDCTL is not None
        return [ETCDCTL, "--endpoints", self.endpoint, *self.flags, "--dial-timeout", self.dial_timeout, "--command-timeout", "15s", *args]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"})
        if check and p.returncode != 0:
            raise AssertionError(f"etcdctl {' '.join(args)} failed ({p.returncode}): {p.stderr}{p.stdout}")
        return p

    def out(self, *args: str) -> list[str]:
        return self.run(*args).stdout.splitlines()

    def refused(self, *args: str) -> str:
        p = self.run(*args, check=False)
        assert p.returncode != 0, f"etcdctl {' '.join(args)} with {self.flags} succeeded: {p.stdout}"
        return p.stderr


@dataclass
class SecurePlayground:
    proc: subprocess.Popen[str]
    out: Lines
    data_dir: Path
    tls: Path
    address: str  # host:port of the first router
    try_line: str

    @property
    def tls_flags(self) -> tuple[str, ...]:
        return ("--cacert", str(self.tls / "ca.crt"), "--cert", str(self.tls / "client.crt"), "--key", str(self.tls / "client.key"))

    def ctl(self, flags: tuple[str, ...] | None = None, *, scheme: str = "https", dial_timeout: str = "5s") -> Ctl:
        return Ctl(f"{scheme}://{self.address}" if scheme else self.address, self.tls_flags if flags is None else flags, dial_timeout)

    def placement(self) -> list[str]:
        import json

        return [f"127.0.0.1:{p}" for p in json.loads((self.data_dir / "playground.json").read_text())["placement_ports"]]


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecurePlayground]:
    data_dir = tmp_path_factory.mktemp("tls") / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flotilla", "playground", "--tls", "--client-port", "0", "--data-dir", str(data_dir), "--shards", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
    )
    out = Lines(proc)
    try:
        endpoints = out.until("endpoints:", READY_TIMEOUT_S).split()[1]
        tls_line = out.until("tls:", 10)
        try_line = out.until("try:", 10)
        out.until("ready", 10)
        assert tls_line.startswith(f"tls: certificates in {data_dir / 'tls'}"), tls_line
        yield SecurePlayground(proc, out, data_dir, data_dir / "tls", endpoints.split(",")[0], try_line)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        out.close()


def _serial_served(address: str, tls_dir: Path) -> int:
    """The serial of the certificate a new TLS connection to address is shown."""
    ctx = ssl.create_default_context(cafile=str(tls_dir / "ca.crt"))
    ctx.load_cert_chain(str(tls_dir / "client.crt"), str(tls_dir / "client.key"))
    ctx.set_alpn_protocols(["h2"])
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as s, ctx.wrap_socket(s, server_hostname=host) as ss:
        der = ss.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


# ------------------------------------------------------------------------------- tests


def test_playground_prints_the_etcdctl_flags(pg: SecurePlayground) -> None:
    d = pg.tls
    assert pg.try_line == (
        f"try: etcdctl --endpoints https://{pg.address} --cacert {d / 'ca.crt'} --cert {d / 'client.crt'} "
        f"--key {d / 'client.key'} put hello world"
    )
    for name in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key"):
        assert (d / name).is_file(), name


def test_put_get_watch_over_tls(pg: SecurePlayground) -> None:
    ctl = pg.ctl()
    assert ctl.out("put", "greeting", "hello") == ["OK"]
    assert ctl.out("get", "greeting") == ["greeting", "hello"]
    members = ctl.out("member", "list")
    assert f"https://{pg.address}" in members[0], members
    w = subprocess.Popen(ctl.argv("watch", "--prefix", "tls/"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, "ETCDCTL_API": "3"})
    wl = Lines(w)
    try:
        # the watch is up once a put made after it starts shows; retry a put until one does
        def seen() -> bool:
            ctl.run("put", "tls/a", "1")
            return wl.next(3) == "PUT"

        wait_until(seen, timeout=30, what="a watch event over TLS", fail_on=())
        assert wl.next(10) == "tls/a" and wl.next(10) == "1"
    finally:
        w.terminate()
        w.wait(timeout=10)
        wl.close()


def test_wrong_ca_and_a_foreign_client_certificate_are_refused(pg: SecurePlayground, tmp_path: Path) -> None:
    other = certs.write_playground_pki(tmp_path / "other")
    d = pg.tls
    # etcdctl does not trust the server's CA
    err = pg.ctl(("--cacert", str(other["ca.crt"]), "--cert", str(d / "client.crt"), "--key", str(d / "client.key")),
                 dial_timeout="3s").refused("get", "greeting")
    assert "deadline exceeded" in err or "certificate" in err, err
    # the server does not trust the client's CA
    pg.ctl(("--cacert", str(d / "ca.crt"), "--cert", str(other["client.crt"]), "--key", str(other["client.key"])),
           dial_timeout="3s").refused("get", "greeting")


def test_plaintext_is_refused(pg: SecurePlayground) -> None:
    pg.ctl((), scheme="", dial_timeout="3s").refused("get", "greeting")
    pg.ctl((), scheme="http", dial_timeout="3s").refused("get", "greeting")


def test_client_cert_auth_refuses_a_client_without_a_certificate(pg: SecurePlayground) -> None:
    pg.ctl(("--cacert", str(pg.tls / "ca.crt")), dial_timeout="3s").refused("get", "greeting")


def test_a_router_by_hand_without_client_cert_auth(pg: SecurePlayground, tmp_path: Path) -> None:
    """The flags of README "TLS": a router joining the secure cluster, its
    client port on TLS, clients need only the CA."""
    d = pg.tls
    ready = tmp_path / "r.ready"
    log = open(tmp_path / "r.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "flotilla", "server", "--router", "--join", ",".join(pg.placement()), "--slots", "1024",
            "--router-listen", "127.0.0.1:0", "--router-name", "byhand", "--ready-file", str(ready),
            "--router-cert-file", str(d / "server.crt"), "--router-key-file", str(d / "server.key"),
            "--peer-cert-file", str(d / "server.crt"), "--peer-key-file", str(d / "server.key"),
            "--peer-trusted-ca-file", str(d / "ca.crt"),
        ],
        stdout=log, stderr=subprocess.STDOUT, env=_env(),
    )
    try:
        def port() -> int:
            assert proc.poll() is None, (tmp_path / "r.log").read_text()
            return int(__import__("json").loads(ready.read_text())["port"]) if ready.exists() else 0

        p = wait_until(port, timeout=60, what="the router by hand ready")
        ctl = Ctl(f"https://127.0.0.1:{p}", ("--cacert", str(d / "ca.crt")))
        wait_until(lambda: ctl.run("put", "byhand", "yes", check=False).returncode == 0, timeout=30, what="a put through it")
        assert ctl.out("get", "byhand") == ["byhand", "yes"]
        Ctl(f"127.0.0.1:{p}", (), "3s").refused("get", "byhand")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def test_internal_ports_are_mutual_tls(pg: SecurePlayground) -> None:
    from flotillapb import placement_pb2 as ppb
    from flotillapb import placement_pb2_grpc

    address = pg.placement()[0]
    d = pg.tls
    for ch in (
        grpc.insecure_channel(address),
        grpc.secure_channel(address, grpc.ssl_channel_credentials((d / "ca.crt").read_bytes())),  # no client cert
    ):
        with ch, pytest.raises(grpc.RpcError) as info:
            placement_pb2_grpc.PlacementStub(ch).GetMap(ppb.GetMapRequest(), timeout=3)
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)  # type: ignore[attr-defined]
    ctl = subprocess.run(
        [sys.executable, "-m", "flotilla", "ctl", "--endpoints", ",".join(pg.placement()),
         "--peer-cert-file", str(d / "client.crt"), "--peer-key-file", str(d / "client.key"),
         "--peer-trusted-ca-file", str(d / "ca.crt"), "nodes"],
        capture_output=True, text=True, timeout=60, env=_env(),
    )
    assert ctl.returncode == 0, ctl.stderr
    assert sum(" store " in line for line in ctl.stdout.splitlines()) == 3, ctl.stdout


def test_certificate_rotation_under_load(pg: SecurePlayground) -> None:
    """Replace server.crt/server.key (every process's client-port and peer
    pair) with a new pair of the same CA while puts run: none fails, and new
    connections are shown the new certificate."""
    d = pg.tls
    old = certs.serial_of((d / "server.crt").read_bytes())
    assert _serial_served(pg.address, d) == old
    ctl = pg.ctl()
    failures: list[str] = []
    done = threading.Event()
    puts = [0]

    def load(worker: int) -> None:
        i = 0
        while not done.is_set():
            p = ctl.run("put", f"rot/{worker}", str(i), check=False)  # a new etcdctl: a new connection, a new handshake
            if p.returncode != 0:
                failures.append(p.stderr)
            puts[0] += 1
            i += 1

    workers = [threading.Thread(target=load, args=(w,), daemon=True) for w in range(2)]
    for t in workers:
        t.start()
    try:
        wait_until(lambda: puts[0] >= 4, timeout=30, what="puts before the rotation")
        ca = certs.load_ca(d / "ca.crt", d / "ca.key")
        cert_pem, key_pem = certs.issue(ca, "flotilla server (rotated)", ["127.0.0.1", "localhost"])
        new = certs.serial_of(cert_pem)
        certs.write_pair(d, "server", (cert_pem, key_pem))  # the key, then the certificate
        wait_until(lambda: _serial_served(pg.address, d) == new, timeout=20, what="the new certificate served")
        before = puts[0]
        wait_until(lambda: puts[0] >= before + 6, timeout=60, what="puts after the rotation")
    finally:
        done.set()
        for t in workers:
            t.join(timeout=40)
    assert not failures, failures
    # new connections between the processes use (and accept) the new pair too
    for address in pg.placement():
        assert _serial_served(address, d) == new
    assert pg.ctl().out("get", "rot/0", "--print-value-only") != []
