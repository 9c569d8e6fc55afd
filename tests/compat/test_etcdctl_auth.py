"""etcd's users, roles and permissions through Debian's etcdctl 3.4, typed as
users type it (`etcdctl user add root:pw`, `etcdctl auth enable`, `--user
root:pw`, `etcdctl role grant-permission --prefix ...`), against one cluster
(3 placement servers, 3 stores) with three routers following it:

- ``plain``: simple tokens with a short --auth-token-ttl (a token expires);
- ``jwt``: --auth-token jwt with an ES256 key pair;
- ``tls``: TLS on its client port with --client-cert-auth (a client
  certificate's common name is the user when no token is sent).

The RBAC matrix runs every user against every key space with get, get
--prefix, put, del, txn, watch and lease revoke, and compares each outcome
with what the granted permissions say (worked out here, independently of
the router): no unauthorized success, no wrong refusal. The last test kills
the placement leader with SIGKILL: users and the enforcement remain.

Every wait has a deadline; every etcdctl run is bounded in time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from flotilla import certs
from flotilla.cluster import Cluster
from flotilla.procs import wait_until
from flotilla.router_main import RouterProcess
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc

pytestmark = pytest.mark.integration

ETCDCTL = shutil.which("etcdctl")
if ETCDCTL is None:
    pytest.skip("etcdctl is not installed (Debian: apt-get install etcd-client)", allow_module_level=True)

TOKEN_TTL_S = 3
DENIED = "etcdserver: permission denied"
ROOT = "root:rootpw"


@dataclass
class Ctl:
    endpoint: str
    flags: tuple[str, ...] = ()

    def argv(self, *args: str, user: str | None = None) -> list[str]:
        assert ETCDCTL is not None
        creds = ("--user", user) if user else ()
        return [ETCDCTL, "--endpoints", self.endpoint, *self.flags, *creds, "--dial-timeout", "5s", "--command-timeout", "15s", *args]

    def run(self, *args: str, user: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args, user=user), input=stdin, capture_output=True, text=True, timeout=40,
                              env={**os.environ, "ETCDCTL_API": "3"})

    def ok(self, *args: str, user: str | None = ROOT, stdin: str | None = None) -> list[str]:
        p = self.run(*args, user=user, stdin=stdin)
        assert p.returncode == 0, f"etcdctl {' '.join(args)} as {user}: {p.stderr}{p.stdout}"
        return p.stdout.splitlines()

    def error(self, *args: str, user: str | None = ROOT, stdin: str | None = None) -> str:
        """The `Error: ...` line of a refused command."""
        p = self.run(*args, user=user, stdin=stdin)
        assert p.returncode != 0, f"etcdctl {' '.join(args)} as {user} succeeded: {p.stdout}"
        return next((ln for ln in p.stderr.splitlines() if ln.startswith("Error:")), p.stderr)


@dataclass
class Env:
    cluster: Cluster
    plain: RouterProcess
    jwt_router: RouterProcess
    tls_router: RouterProcess
    tmp: Path
    jwt_public: bytes
    pki: dict[str, Path] = field(default_factory=dict)

    @property
    def ctl(self) -> Ctl:
        return Ctl(self.plain.address)

    def tls_ctl(self, who: str) -> Ctl:
        d = self.tmp / "pki"
        return Ctl(f"https://{self.tls_router.address}", ("--cacert", str(d / "ca.crt"), "--cert", str(d / f"{who}.crt"), "--key", str(d / f"{who}.key")))


def _write_pki(d: Path) -> None:
    ca = certs.make_ca("auth test CA")
    d.mkdir(parents=True)
    certs.write_file(d / "ca.crt", ca.cert_pem)
    certs.write_pair(d, "server", certs.issue(ca, "server", ["127.0.0.1", "localhost"]))
    for cn in ("alice", "root", "mallory"):
        certs.write_pair(d, cn, certs.issue(ca, cn, (), server=False, client=True))


def _es256_pair(d: Path) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (d / "jwt.key").write_bytes(priv)
    (d / "jwt.pub").write_bytes(pub)
    return pub


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("auth")
    c = Cluster(tmp / "cluster", initial_shards=2)
    routers: list[RouterProcess] = []
    try:
        c.start()
        c.wait_bootstrapped()
        paddr = ",".join(c.placement.nodes[n].address for n in c.placement_ids)
        _write_pki(tmp / "pki")
        pub = _es256_pair(tmp)
        common = ["--placement", paddr, "--bcrypt-cost", "4"]
        specs = {
            "plain": ["--auth-token-ttl", str(TOKEN_TTL_S)],
            "jwt": ["--auth-token", f"jwt,pub-key={tmp / 'jwt.pub'},priv-key={tmp / 'jwt.key'},sign-method=ES256,ttl=10m"],
            "tls": ["--cert-file", str(tmp / "pki/server.crt"), "--key-file", str(tmp / "pki/server.key"),
                    "--trusted-ca-file", str(tmp / "pki/ca.crt"), "--client-cert-auth"],
        }
        for name, args in specs.items():
            (tmp / name).mkdir()
            r = RouterProcess(tmp / name, [*common, *args], name=name)
            routers.append(r)
            r.start(timeout_s=60)
        e = Env(c, routers[0], routers[1], routers[2], tmp, pub)
        wait_until(lambda: e.ctl.run("get", "warmup").returncode == 0, timeout=30, what="etcdctl get through the router")
        yield e
    except BaseException:
        print(c.logs())
        for r in routers:
            print(r.log_tail(60))
        raise
    finally:
        for r in routers:
            r.stop()
        c.stop()


@pytest.fixture(scope="module")
def secured(env: Env) -> Env:
    """Auth enabled the way etcd's docs do it: a root user, then `auth enable`."""
    ctl = env.ctl
    assert ctl.error("auth", "enable", user=None) == "Error: etcdserver: root user does not exist"
    assert ctl.ok("user", "add", ROOT, user=None) == ["User root created"]
    assert ctl.ok("auth", "enable", user=None) == ["Authentication Enabled"]  # etcdctl adds the root role and grants it
    return env


# ------------------------------------------------------------------------------- errors


def test_etcds_answers_once_auth_is_on(secured: Env) -> None:
    ctl = secured.ctl
    assert ctl.error("get", "k", user=None) == "Error: etcdserver: user name is empty"
    assert ctl.error("get", "k", user="root:wrong") == "Error: etcdserver: authentication failed, invalid user ID or password"
    assert ctl.error("get", "k", user="ghost:pw") == "Error: etcdserver: authentication failed, invalid user ID or password"
    assert ctl.error("user", "add", "root:again") == "Error: etcdserver: user name already exists"
    assert ctl.error("user", "get", "ghost") == "Error: etcdserver: user name not found"
    assert ctl.error("role", "get", "ghost") == "Error: etcdserver: role name not found"
    assert ctl.error("user", "delete", "root") == "Error: etcdserver: invalid auth management"
    assert ctl.ok("role", "add", "errs") == ["Role errs created"]
    assert ctl.error("role", "add", "errs") == "Error: etcdserver: role name already exists"
    assert ctl.error("role", "revoke-permission", "errs", "k") == "Error: etcdserver: permission is not granted to the role"
    assert ctl.error("user", "revoke-role", "root", "errs") == "Error: etcdserver: role is not granted to the user"
    assert ctl.ok("user", "add", "nobody:pw") == ["User nobody created"]
    assert ctl.error("user", "list", user="nobody:pw") == f"Error: {DENIED}"
    assert ctl.ok("user", "get", "nobody", user="nobody:pw") == ["User: nobody", "Roles:"]  # oneself: allowed, as etcd
    assert f"({DENIED})" in ctl.error("defrag", user="nobody:pw")  # maintenance needs root
    assert ctl.ok("auth", "disable", user=ROOT) == ["Authentication Disabled"]
    assert ctl.ok("put", "k", "v", user=None) == ["OK"]
    assert ctl.ok("user", "get", "root", user="nobody:pw") == ["User: root", "Roles: root"]  # etcdctl goes on without a token
    with pytest.raises(grpc.RpcError) as refused:
        _authenticate(secured.plain.address, "root", "rootpw")
    assert (refused.value.code(), refused.value.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: authentication is not enabled")
    assert ctl.ok("auth", "enable", user=ROOT) == ["Authentication Enabled"]
    assert ctl.error("get", "k", user=None) == "Error: etcdserver: user name is empty"


# ---------------------------------------------------------------------------- the matrix

# Key spaces: one hash tag, so a txn over several spaces stays in one shard.
A = "{m}a/"          # a prefix
B = "{m}b"           # one key
C = ("{m}c/1", "{m}c/5")  # a range
D = "{m}d/"          # nobody's but root's

ROLES = {
    "a_rw": [("readwrite", "--prefix", A)],
    "a_r": [("read", "--prefix", A)],
    "b_r": [("read", "", B)],
    "c_w": [("write", "range", C)],
    "d_r_from": [("read", "--from-key", "{m}d/m")],
}
USERS = {
    "writer": ["a_rw"],
    "reader": ["a_r", "b_r"],
    "mixed": ["a_r", "b_r", "c_w", "d_r_from"],
    "none": [],
}


def _perms(user: str) -> list[tuple[str, str, str | None]]:
    """(kind, start, end) the user's roles grant; end None: no end; "" : the one key."""
    out: list[tuple[str, str, str | None]] = []
    for role in USERS[user]:
        for kind, how, what in ROLES[role]:
            if how == "--prefix":
                assert isinstance(what, str)
                out.append((kind, what, what[:-1] + chr(ord(what[-1]) + 1)))
            elif how == "range":
                out.append((kind, what[0], what[1]))
            elif how == "--from-key":
                assert isinstance(what, str)
                out.append((kind, what, None))
            else:
                assert isinstance(what, str)
                out.append((kind, what, ""))
    return out


def _may(user: str, kind: str, start: str, end: str) -> bool:
    """Whether one granted permission covers [start, end) (end "": the one key start) for kind (read/write)."""
    for pkind, ps, pe in _perms(user):
        if pkind not in (kind, "readwrite"):
            continue
        if pe == "":
            if end == "" and start == ps:
                return True
            continue
        if start < ps:
            continue
        if end == "":
            if pe is None or start < pe:
                return True
        elif pe is None or end <= pe:
            return True
    return False


def _next(s: str) -> str:
    return s[:-1] + chr(ord(s[-1]) + 1)


TARGETS = {"A": A + "x", "B": B, "C": "{m}c/3", "D": D + "x", "Dz": "{m}d/z"}
PREFIXES = {"A": A, "C": "{m}c/", "D": D}


@dataclass
class Case:
    user: str
    what: str
    args: tuple[str, ...]
    allowed: bool
    stdin: str | None = None


def _cases() -> list[Case]:
    cases: list[Case] = []
    for user in USERS:
        for name, key in TARGETS.items():
            cases.append(Case(user, f"get {name}", ("get", key), _may(user, "read", key, "")))
            cases.append(Case(user, f"put {name}", ("put", key, "v"), _may(user, "write", key, "")))
            cases.append(Case(user, f"del {name}", ("del", key), _may(user, "write", key, "")))
        for name, pfx in PREFIXES.items():
            cases.append(Case(user, f"get --prefix {name}", ("get", "--prefix", pfx), _may(user, "read", pfx, _next(pfx))))
        cases.append(Case(user, "get range C", ("get", C[0], C[1]), _may(user, "read", C[0], C[1])))
        cases.append(Case(user, "del range C", ("del", C[0], C[1]), _may(user, "write", C[0], C[1])))
        for rk, wk in (("A", "A"), ("B", "C"), ("A", "D"), ("B", "A")):
            r, w = TARGETS[rk], TARGETS[wk]
            script = f'value("{r}") = "v"\n\nput {w} t\n\nget {r}\n\n'
            allowed = _may(user, "read", r, "") and _may(user, "write", w, "")
            cases.append(Case(user, f"txn read {rk} write {wk}", ("txn",), allowed, script))
    return cases


def _setup_matrix(ctl: Ctl) -> None:
    for role, perms in ROLES.items():
        ctl.ok("role", "add", role)
        for kind, how, what in perms:
            if how == "range":
                ctl.ok("role", "grant-permission", role, kind, what[0], what[1])
            elif how:
                ctl.ok("role", "grant-permission", role, kind, how, what)
            else:
                ctl.ok("role", "grant-permission", role, kind, what)
    for user, roles in USERS.items():
        ctl.ok("user", "add", f"{user}:{user}pw")
        for role in roles:
            ctl.ok("user", "grant-role", user, role)


def test_rbac_matrix(secured: Env) -> None:
    ctl = secured.ctl
    _setup_matrix(ctl)
    assert ctl.ok("role", "get", "a_rw") == ["Role a_rw", "KV Read:", f"\t[{A}, {{m}}a0) (prefix {A})", "KV Write:", f"\t[{A}, {{m}}a0) (prefix {A})"]
    cases = _cases()

    def run(case: Case) -> tuple[Case, bool, str]:
        p = ctl.run(*case.args, user=f"{case.user}:{case.user}pw", stdin=case.stdin)
        return case, p.returncode == 0, p.stderr

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, cases))
    unauthorized = [(c.user, c.what) for c, ok, _ in results if ok and not c.allowed]
    wrong_refusals = [(c.user, c.what, err) for c, ok, err in results if not ok and c.allowed]
    odd = [(c.user, c.what, err) for c, ok, err in results if not ok and not c.allowed and DENIED not in err]
    print(f"rbac matrix: {len(results)} cases, {sum(c.allowed for c in cases)} allowed, "
          f"{len(unauthorized)} unauthorized successes, {len(wrong_refusals)} wrong refusals")
    assert unauthorized == [] and wrong_refusals == [] and odd == []
    assert 0 < sum(c.allowed for c in cases) < len(cases)


def test_rbac_watch(secured: Env) -> None:
    """A watch on what the user may not read is canceled with etcd's reason; one it may read sees the events."""
    ctl = secured.ctl
    if "a_rw" not in ctl.ok("role", "list"):
        _setup_matrix(ctl)
    watches = {(u, name): key for u in USERS for name, key in TARGETS.items()}
    procs = {
        k: subprocess.Popen(ctl.argv("watch", key, user=f"{k[0]}:{k[0]}pw"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "ETCDCTL_API": "3"})
        for k, key in watches.items()
    }
    seen: dict[tuple[str, str], list[str]] = {k: [] for k in procs}

    def pump(k: tuple[str, str]) -> None:
        out = procs[k].stdout
        assert out is not None
        for line in out:
            seen[k].append(line.rstrip("\n"))

    pumps = [threading.Thread(target=pump, args=(k,), daemon=True) for k in procs]
    for t in pumps:
        t.start()
    n = 0

    def settled() -> bool:
        nonlocal n
        n += 1
        for key in TARGETS.values():
            ctl.ok("put", key, f"w{n}")
        return all(procs[k].poll() is not None if not _may(k[0], "read", watches[k], "") else "PUT" in seen[k] for k in procs)

    try:
        wait_until(settled, timeout=40, what="every refused watch canceled, every allowed one seeing the puts")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
        for t in pumps:
            t.join(timeout=10)
        for p in procs.values():
            if p.stdout is not None:
                p.stdout.close()
    outcome = {k: ("canceled:" if not _may(k[0], "read", watches[k], "") else "watching:") + "\n".join(seen[k]) for k in procs}
    for (user, name), got in outcome.items():
        if _may(user, "read", watches[(user, name)], ""):
            assert got.startswith("watching:PUT") and "canceled" not in got, (user, name, got)
        else:
            assert got.startswith("canceled:") and f"watch was canceled ({DENIED})" in got, (user, name, got)


def test_lease_revoke_needs_write_on_every_attached_key(secured: Env) -> None:
    ctl = secured.ctl
    if "a_rw" not in ctl.ok("role", "list"):
        _setup_matrix(ctl)
    checked = 0
    for user in USERS:
        for name, key in TARGETS.items():
            lease = ctl.ok("lease", "grant", "60")[0].split()[1]
            ctl.ok("put", "--lease", lease, key, "leased")
            allowed = _may(user, "write", key, "")
            p = ctl.run("lease", "revoke", lease, user=f"{user}:{user}pw")
            assert (p.returncode == 0) == allowed, (user, name, p.stderr)
            if not allowed:
                assert DENIED in p.stderr
                ctl.ok("lease", "revoke", lease)
            checked += 1
    # a lease the user may grant, and attach to a key it may write
    lease = ctl.ok("lease", "grant", "60", user="writer:writerpw")[0].split()[1]
    assert ctl.ok("put", "--lease", lease, A + "own", "v", user="writer:writerpw") == ["OK"]
    ctl.ok("put", "--lease", lease, D + "rooted", "v")  # root attaches a key the writer may not write
    assert DENIED in ctl.error("put", "--lease", lease, A + "own2", "v", user="writer:writerpw")  # etcd's checkLeasePuts
    assert checked == len(USERS) * len(TARGETS)


# ------------------------------------------------------------------------------- tokens


def _authenticate(address: str, user: str, password: str) -> str:
    with grpc.insecure_channel(address) as ch:
        return rpc_pb2_grpc.AuthStub(ch).Authenticate(epb.AuthenticateRequest(name=user, password=password), timeout=15).token


def _range(address: str, token: str, key: bytes = b"k", channel: grpc.Channel | None = None) -> grpc.StatusCode:
    ch = channel or grpc.insecure_channel(address)
    try:
        rpc_pb2_grpc.KVStub(ch).Range(epb.RangeRequest(key=key), metadata=[("token", token)], timeout=15)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    finally:
        if channel is None:
            ch.close()


def test_simple_token_expires_after_its_ttl(secured: Env) -> None:
    address = secured.plain.address
    issued = time.monotonic()
    token = _authenticate(address, "root", "rootpw")
    assert len(token.split(".")[0]) == 16  # etcd's simple token: 16 letters, a dot, a number
    assert _range(address, token) == grpc.StatusCode.OK
    with grpc.insecure_channel(address) as ch:
        wait_until(lambda: _range(address, token, channel=ch) == grpc.StatusCode.UNAUTHENTICATED, timeout=TOKEN_TTL_S + 10, what="the token expired")
        expired = time.monotonic()
        try:
            rpc_pb2_grpc.KVStub(ch).Range(epb.RangeRequest(key=b"k"), metadata=[("token", token)], timeout=15)
        except grpc.RpcError as exc:
            assert exc.details() == "etcdserver: invalid auth token"
    assert expired - issued >= TOKEN_TTL_S - 0.5
    assert secured.ctl.ok("get", "k") is not None  # etcdctl authenticates again


def test_simple_token_is_valid_at_every_router(secured: Env) -> None:
    """A token issued by one router is accepted by another (placement logs it)."""
    token = _authenticate(secured.plain.address, "root", "rootpw")
    d = secured.tmp / "pki"
    creds = grpc.ssl_channel_credentials((d / "ca.crt").read_bytes(), (d / "mallory.key").read_bytes(), (d / "mallory.crt").read_bytes())
    with grpc.secure_channel(secured.tls_router.address, creds) as ch:
        assert _range("", token, channel=ch) == grpc.StatusCode.OK  # the token's user (root), not the certificate's (mallory)
        assert _range("", "forged.1", channel=ch) == grpc.StatusCode.UNAUTHENTICATED


def test_jwt_tokens(secured: Env) -> None:
    address = secured.jwt_router.address
    jctl = Ctl(address)
    assert jctl.ok("put", A + "jwt", "v") == ["OK"]
    token = _authenticate(address, "root", "rootpw")
    claims = jwt.decode(token, secured.jwt_public, algorithms=["ES256"])
    assert claims["username"] == "root" and isinstance(claims["revision"], int) and claims["exp"] > time.time() + 500
    assert _range(address, token) == grpc.StatusCode.OK
    assert _range(secured.plain.address, token) == grpc.StatusCode.UNAUTHENTICATED  # a simple-token router knows no JWT
    secured.ctl.ok("role", "add", f"bump{time.monotonic_ns()}")  # the auth revision grows: older JWTs are refused
    with grpc.insecure_channel(address) as ch:
        wait_until(lambda: _range(address, token, channel=ch) != grpc.StatusCode.OK, timeout=10, what="the old JWT refused")
        try:
            rpc_pb2_grpc.KVStub(ch).Range(epb.RangeRequest(key=b"k"), metadata=[("token", token)], timeout=15)
            raise AssertionError("an old JWT was accepted")
        except grpc.RpcError as exc:
            assert (exc.code(), exc.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: revision of auth store is old")
    assert jctl.ok("get", A + "jwt", "--print-value-only") == ["v"]  # etcdctl authenticates again


def test_client_certificate_common_name_is_the_user(secured: Env) -> None:
    ctl = secured.ctl
    if "a_rw" not in ctl.ok("role", "list"):
        _setup_matrix(ctl)
    if "alice" not in ctl.ok("user", "list"):
        ctl.ok("user", "add", "alice", "--no-password")
        ctl.ok("user", "grant-role", "alice", "a_rw")
    alice, root, mallory = (secured.tls_ctl(cn) for cn in ("alice", "root", "mallory"))
    assert alice.ok("put", A + "cn", "alice", user=None) == ["OK"]
    assert alice.ok("get", A + "cn", "--print-value-only", user=None) == ["alice"]
    assert alice.error("put", D + "cn", "x", user=None) == f"Error: {DENIED}"
    assert root.ok("put", D + "cn", "root", user=None) == ["OK"]  # the certificate of CN root: the root user
    assert mallory.error("get", A + "cn", user=None) == f"Error: {DENIED}"  # a CN that is no user
    assert alice.error("get", A + "cn", user="alice:x") == "Error: etcdserver: authentication failed, invalid user ID or password"  # no password user
    assert mallory.ok("get", D + "cn", "--print-value-only", user=ROOT) == ["root"]  # a token wins over the certificate


# ------------------------------------------------------------------------ placement failover


def test_auth_survives_a_placement_leader_kill(secured: Env) -> None:
    ctl = secured.ctl
    if "a_rw" not in ctl.ok("role", "list"):
        _setup_matrix(ctl)
    users_before = ctl.ok("user", "list")
    c = secured.cluster
    leader = c.placement.wait_leader()
    c.placement.kill(leader)  # SIGKILL
    wait_until(lambda: (lid := c.placement.leader()) is not None and lid != leader, timeout=30, what="a new placement leader")
    wait_until(lambda: ctl.run("get", "k", user=ROOT).returncode == 0, timeout=30, what="the router serving after the failover")
    assert ctl.ok("user", "list") == users_before
    assert ctl.error("get", A + "x", user=None) == "Error: etcdserver: user name is empty"
    assert ctl.error("put", D + "x", "v", user="writer:writerpw") == f"Error: {DENIED}"
    assert ctl.ok("put", A + "after", "v", user="writer:writerpw") == ["OK"]
    assert ctl.ok("role", "get", "c_w") == ["Role c_w", "KV Read:", "KV Write:", f"\t[{C[0]}, {C[1]})"]
