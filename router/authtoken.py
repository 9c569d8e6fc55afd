"""Auth tokens as etcd makes them: `--auth-token simple` (the default) or
`--auth-token jwt,pub-key=FILE,priv-key=FILE,sign-method=RS256,ttl=5m`,
parsed as etcd's decomposeOpts and jwtOptions parse them
(server/auth/store.go, options.go).

- simple: 16 random letters, a dot and a number, as etcd's; valid for
  `--auth-token-ttl` seconds (default 300) from Authenticate. Placement
  logs each one (router/authstore.py), so every router knows it.
- jwt: signed with PyJWT; claims ``username``, ``revision`` (the auth
  revision when issued: a token older than the current revision is refused
  with "revision of auth store is old", and clients authenticate again) and
  ``exp``. Any router holding the public key verifies it; one with only the
  public key cannot issue tokens. Sign methods: RS256/384/512, PS256/384/512,
  ES256/384/512, EdDSA, HS256/384/512 (the HMAC key is the priv-key file).
"""

from __future__ import annotations

import re
import secrets
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

DEFAULT_SIMPLE_TTL_S = 300  # etcd's --auth-token-ttl
DEFAULT_JWT_TTL_S = 300.0  # etcd's jwt ttl default (5m)
SIMPLE_TOKEN_LENGTH = 16

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_KNOWN = {"pub-key", "priv-key", "sign-method", "ttl"}


class AuthTokenError(ValueError):
    """An --auth-token option etcd would refuse (etcd: "auth: invalid auth options")."""


def parse_duration(text: str) -> float:
    """A Go duration ("5m", "1h30m", "300s", "100ms") in seconds."""
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise AuthTokenError(f"invalid duration {text!r} (e.g. 5m, 300s, 1h)")
    return total


def decompose(option: str) -> tuple[str, dict[str, str]]:
    """etcd's decomposeOpts: "type,k=v,k=v" -> (type, {k: v}); a pair without one '=' or a repeated key is refused."""
    parts = option.split(",")
    opts: dict[str, str] = {}
    for part in parts[1:]:
        pair = part.split("=")
        if len(pair) != 2:
            raise AuthTokenError(f"--auth-token: invalid option {part!r} (want key=value)")
        if pair[0] in opts:
            raise AuthTokenError(f"--auth-token: {pair[0]} given twice")
        opts[pair[0]] = pair[1]
    return parts[0], opts


class SimpleTokens:
    kind = "simple"

    def __init__(self, ttl_s: int = DEFAULT_SIMPLE_TTL_S) -> None:
        if ttl_s <= 0:
            raise AuthTokenError("--auth-token-ttl must be positive")
        self.ttl_s = ttl_s
        self._n = secrets.randbits(32)

    def new_token(self) -> str:
        self._n += 1
        prefix = "".join(secrets.choice(string.ascii_letters) for _ in range(SIMPLE_TOKEN_LENGTH))
        return f"{prefix}.{self._n}"

    def expires_ms(self, now_ms: int) -> int:
        return now_ms + self.ttl_s * 1000


@dataclass(frozen=True, slots=True)
class JwtInfo:
    user: str
    revision: int


class JwtTokens:
    kind = "jwt"

    def __init__(self, opts: dict[str, str]) -> None:
        unknown = set(opts) - _KNOWN
        if unknown:
            raise AuthTokenError(f"--auth-token jwt: unknown options {sorted(unknown)} (known: {sorted(_KNOWN)})")
        self.method = opts.get("sign-method", "")
        try:
            self._alg = jwt.get_algorithm_by_name(self.method)
        except (NotImplementedError, KeyError):
            raise AuthTokenError(f"--auth-token jwt: invalid sign-method {self.method!r} (e.g. RS256, ES256)") from None
        self.ttl_s = parse_duration(opts["ttl"]) if opts.get("ttl") else DEFAULT_JWT_TTL_S
        priv = Path(opts["priv-key"]).read_bytes() if opts.get("priv-key") else b""
        pub = Path(opts["pub-key"]).read_bytes() if opts.get("pub-key") else b""
        self._sign_key: Any = None
        self._verify_key: Any
        if self.method.startswith("HS"):
            if not priv:
                raise AuthTokenError("--auth-token jwt: an HMAC sign-method needs priv-key")
            self._sign_key = self._verify_key = priv
            return
        if not priv and not pub:
            raise AuthTokenError("--auth-token jwt: give priv-key (to issue and verify) or pub-key (to verify)")
        private = serialization.load_pem_private_key(priv, password=None) if priv else None
        public = serialization.load_pem_public_key(pub) if pub else None
        kinds = (rsa.RSAPrivateKey, rsa.RSAPublicKey) if self.method[:2] in ("RS", "PS") else (
            (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey) if self.method.startswith("ES") else (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)
        )
        if private is not None and not isinstance(private, kinds[0]):
            raise AuthTokenError(f"--auth-token jwt: priv-key is not a key for {self.method}")
        if public is not None and not isinstance(public, kinds[1]):
            raise AuthTokenError(f"--auth-token jwt: pub-key is not a key for {self.method}")
        if private is not None and public is not None:
            fmt = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            if private.public_key().public_bytes(*fmt) != public.public_bytes(*fmt):  # type: ignore[union-attr]
                raise AuthTokenError("--auth-token jwt: public and private keys don't match")
        self._sign_key = private
        self._verify_key = public if public is not None else private.public_key()  # type: ignore[union-attr]

    @property
    def verify_only(self) -> bool:
        return self._sign_key is None

    def sign(self, user: str, revision: int) -> str:
        claims = {"username": user, "revision": revision, "exp": int(time.time() + self.ttl_s)}
        return jwt.encode(claims, self._sign_key, algorithm=self.method)

    def verify(self, token: str) -> JwtInfo | None:
        """The token's user and revision, or None if it is not valid (bad signature, expired, wrong claims)."""
        try:
            claims = jwt.decode(token, self._verify_key, algorithms=[self.method])
        except jwt.PyJWTError:
            return None
        user, revision = claims.get("username"), claims.get("revision")
        if not isinstance(user, str) or not isinstance(revision, (int, float)):
            return None
        return JwtInfo(user, int(revision))


TokenProvider = SimpleTokens | JwtTokens


def provider(option: str = "simple", ttl_s: int = DEFAULT_SIMPLE_TTL_S) -> TokenProvider:
    """The token provider of etcd's --auth-token option (and --auth-token-ttl for simple tokens)."""
    kind, opts = decompose(option)
    if kind == "simple":
        return SimpleTokens(ttl_s)
    if kind == "jwt":
        try:
            return JwtTokens(opts)
        except OSError as exc:
            raise AuthTokenError(f"--auth-token jwt: {exc}") from None
    raise AuthTokenError(f"--auth-token: unknown token type {kind!r} (simple or jwt)")
