"""NATS connections with the credentials of docs/security.md: user and
password, token, NKey seed file, creds file, TLS and mutual TLS; from
arguments or from the same environment variables the Go binaries read.
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass, fields
from typing import Any

from nats.aio.client import Client as NATS

from cortexos.errors import ConfigError

__all__ = ["Credentials", "connect"]

log = logging.getLogger("cortexos")

_ENV = {
    "user": "NATS_USER",
    "password": "NATS_PASSWORD",
    "token": "NATS_TOKEN",
    "nkey_seed": "NATS_NKEY_SEED",
    "creds": "NATS_CREDS",
    "ca": "NATS_CA",
    "cert": "NATS_CERT",
    "key": "NATS_KEY",
    "tls_server_name": "NATS_TLS_SERVER_NAME",
    "inbox_prefix": "NATS_INBOX_PREFIX",
}


@dataclass(frozen=True)
class Credentials:
    """How to authenticate to NATS. Set at most one of user/password, token,
    nkey_seed (a seed file, ``SU...``) and creds (a user JWT and seed file);
    TLS (``ca``, and ``cert`` with ``key`` for mutual TLS) goes with any.
    NKeys and creds files need the ``nkeys`` package (``pip install
    cortexos[nkeys]``)."""

    user: str | None = None
    password: str | None = None
    token: str | None = None
    nkey_seed: str | None = None
    creds: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    tls_server_name: str | None = None
    #: The subject prefix of this connection's inboxes; default
    #: ``_INBOX.<user>`` with a user (what the shipped permissions allow).
    inbox_prefix: str | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Credentials:
        """The credentials in NATS_USER, NATS_PASSWORD, NATS_TOKEN,
        NATS_NKEY_SEED, NATS_CREDS, NATS_CA, NATS_CERT, NATS_KEY,
        NATS_TLS_SERVER_NAME and NATS_INBOX_PREFIX."""
        env = os.environ if environ is None else environ
        return cls(**{name: env.get(var) or None for name, var in _ENV.items()})

    def is_zero(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def validate(self) -> None:
        kinds = [
            k
            for k, on in (
                ("user/password", self.user is not None or self.password is not None),
                ("token", self.token is not None),
                ("nkey_seed", self.nkey_seed is not None),
                ("creds", self.creds is not None),
            )
            if on
        ]
        if len(kinds) > 1:
            raise ConfigError(f"nats credentials: set at most one of user/password, token, nkey_seed and creds; got {', '.join(kinds)}")
        if (self.user is None) != (self.password is None):
            raise ConfigError("nats credentials: user and password go together")
        if (self.cert is None) != (self.key is None):
            raise ConfigError("nats credentials: cert and key go together: mutual TLS needs both")
        for name in ("nkey_seed", "creds", "ca", "cert", "key"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise ConfigError(f"nats credentials: {name} ({_ENV[name]}): {path}: no such file")

    def describe(self) -> str:
        """What is used, without secrets (for logs)."""
        parts = []
        if self.user:
            parts.append(f"user {self.user}")
        if self.token:
            parts.append("token")
        if self.nkey_seed:
            parts.append("nkey")
        if self.creds:
            parts.append("creds")
        if self.ca or self.cert:
            parts.append("TLS (" + ", ".join(n for n in ("ca", "cert") if getattr(self, n)) + ")")
        return ", ".join(parts) or "none"

    def tls_context(self) -> ssl.SSLContext | None:
        if not (self.ca or self.cert):
            return None
        ctx = ssl.create_default_context(cafile=self.ca)
        if self.cert and self.key:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def options(self, inbox_identity: str | None = None) -> dict[str, Any]:
        """Keyword arguments for nats.connect. ``inbox_identity`` (a client
        identity) sets the inbox prefix ``_INBOX.<identity>``."""
        self.validate()
        opts: dict[str, Any] = {}
        if self.user is not None:
            opts["user"], opts["password"] = self.user, self.password
        if self.token is not None:
            opts["token"] = self.token
        if self.nkey_seed is not None:
            opts["nkeys_seed"] = self.nkey_seed
        if self.creds is not None:
            opts["user_credentials"] = self.creds
        tls = self.tls_context()
        if tls is not None:
            opts["tls"] = tls
            if self.tls_server_name:
                opts["tls_hostname"] = self.tls_server_name
        prefix = self.inbox_prefix
        if prefix is None and inbox_identity:
            prefix = f"_INBOX.{inbox_identity}"
        if prefix is None and self.user:
            prefix = f"_INBOX.{self.user}"
        if prefix is not None:
            opts["inbox_prefix"] = prefix
        return opts


async def connect(
    nats_url: str,
    credentials: Credentials | None,
    *,
    name: str,
    inbox_identity: str | None = None,
    logger: logging.Logger | None = None,
) -> NATS:
    """A connection that reconnects forever and logs disconnects, reconnects
    and asynchronous errors (permission violations among them)."""
    lg = logger or log
    creds = credentials or Credentials()

    async def error_cb(e: Exception) -> None:
        lg.warning("nats: %s: %s", type(e).__name__, e)

    nc = NATS()

    async def disconnected_cb() -> None:
        if not (nc.is_closed or nc.is_draining):
            lg.warning("nats: disconnected")

    async def reconnected_cb() -> None:
        lg.info("nats: reconnected")

    await nc.connect(
        servers=[s.strip() for s in nats_url.split(",") if s.strip()],
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,  # type: ignore[arg-type]  # seconds; nats-py takes a float
        error_cb=error_cb,
        disconnected_cb=disconnected_cb,
        reconnected_cb=reconnected_cb,
        **creds.options(inbox_identity),
    )
    return nc
