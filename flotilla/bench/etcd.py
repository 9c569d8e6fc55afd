"""A real etcd cluster on 127.0.0.1 for `flotilla bench --compare-etcd` and
the bench tests: N members (3 by default) of Debian's etcd-server binary
(/usr/bin/etcd; scripts/install_bench_deps.sh installs it), every peer and
client URL explicit on free ports, data under a directory of the caller's,
stopped by the pids it started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

__all__ = ["DEFAULT_ETCD_BIN", "EtcdCluster", "EtcdMember", "free_ports"]

DEFAULT_ETCD_BIN = "/usr/bin/etcd"


def free_ports(n: int) -> list[int]:
    """n distinct ports the kernel had free just now (bound together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


@dataclass
class EtcdCluster:
    workdir: Path
    size: int = 3
    etcd_bin: str = DEFAULT_ETCD_BIN
    extra_args: list[str] = field(default_factory=list)
    members: list[EtcdMember] = field(default_factory=list)
    _initial: str = ""
    _token: str = ""

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def start(self, timeout_s: float = 30) -> list[str]:
        if not os.access(self.etcd_bin, os.X_OK):
            raise FileNotFoundError(f"no etcd at {self.etcd_bin}: run scripts/install_bench_deps.sh")
        self.workdir.mkdir(parents=True, exist_ok=True)
        ports = free_ports(2 * self.size)
        token = f"flotilla-bench-{os.getpid()}-{time.monotonic_ns()}"
        self.members = [
            EtcdMember(
                name=f"etcd{i + 1}",
                client_port=ports[2 * i],
                peer_port=ports[2 * i + 1],
                data_dir=self.workdir / f"etcd{i + 1}.data",
                log_path=self.workdir / f"etcd{i + 1}.log",
            )
            for i in range(self.size)
        ]
        self._initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        self._token = token
        for m in self.members:
            self._spawn(m)
        try:
            self.await_leader(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self.endpoints

    def _spawn(self, m: EtcdMember) -> None:
        """Start member m: its first start, or a restart on its data directory
        (etcd then ignores the --initial-* flags)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        args = [
            self.etcd_bin,
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url,
            "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url,
            "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", self._initial,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", self._token,
            "--logger", "zap",
            "--log-outputs", "stderr",
            *self.extra_args,
        ]
        with open(m.log_path, "ab") as logf:
            m.proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=str(self.workdir))

    def leader(self, timeout_s: float = 2) -> EtcdMember | None:
        """The member that says it leads (Maintenance.Status: leader ==
        its own member id), if one answers so."""
        from flotillapb.etcd.etcdserverpb import rpc_pb2 as pb
        from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc as pbg

        for m in self.members:
            if m.proc is None or m.proc.poll() is not None:
                continue
            with grpc.insecure_channel(m.endpoint) as ch:
                try:
                    st = pbg.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=timeout_s)
                except grpc.RpcError:
                    continue
            if st.leader and st.leader == st.header.member_id:
                return m
        return None

    def kill(self, m: EtcdMember) -> None:
        """kill -9 member m (its pid, started here) and reap it."""
        assert m.proc is not None
        m.proc.kill()
        m.proc.wait(timeout=30)

    def restart(self, m: EtcdMember, timeout_s: float = 30) -> None:
        """Start a stopped member again on its ports and data, and wait until
        the cluster agrees on a leader and a write commits."""
        assert m.proc is None or m.proc.poll() is not None, f"{m.name} still runs"
        self._spawn(m)
        self.await_leader(timeout_s)

    def await_leader(self, timeout_s: float) -> None:
        """Wait until every member names the same leader and a put commits."""
        from flotillapb.etcd.etcdserverpb import rpc_pb2 as pb
        from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc as pbg

        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            for m in self.members:
                assert m.proc is not None
                if m.proc.poll() is not None:
                    raise RuntimeError(f"etcd member {m.name} exited with {m.proc.returncode}:\n{self.log_tail(m)}")
            try:
                leaders = set()
                for m in self.members:
                    with grpc.insecure_channel(m.endpoint) as ch:
                        st = pbg.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=1)
                        leaders.add(st.leader)
                if len(leaders) == 1 and 0 not in leaders:
                    with grpc.insecure_channel(self.members[0].endpoint) as ch:  # a write commits
                        pbg.KVStub(ch).Put(pb.PutRequest(key=b"bench-etcd-ready", value=b"1"), timeout=5)
                    return
                last = f"leaders seen {leaders}"
            except grpc.RpcError as exc:
                last = f"{exc.code().name}: {exc.details()}"
            time.sleep(0.1)  # polling a process we do not control; no event to wait on
        raise TimeoutError(f"etcd cluster not ready in {timeout_s} s ({last})")

    def stop(self) -> None:
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                m.proc.send_signal(signal.SIGTERM)
        for m in self.members:
            if m.proc is not None:
                try:
                    m.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    m.proc.kill()
                    m.proc.wait(timeout=10)

    def log_tail(self, m: EtcdMember, lines: int = 20) -> str:
        p = m.log_path
        return "\n".join(p.read_text(errors="replace").splitlines()[-lines:]) if p.exists() else ""

    def __enter__(self) -> EtcdCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
