"""Where a job's input and result live: the pointers in JobRequest.context_ptr
and JobResult.result_ptr.

Two schemes are read and written here:

``data:[<media type>][;base64],<data>``
    The bytes inline, as in RFC 2397. For small values: the scheduler caps
    context_ptr at 4096 bytes, and a result_ptr is kept in the job store.

``obj://<bucket>/<key>``
    An object in a JetStream object store bucket (default ``CORTEX_BLOBS``).
    The bucket is created on first write if it does not exist.

Any other pointer (``memory://echo/<id>`` from the Go echo worker, say) is
passed through: a worker may return one (:class:`Pointer`) and a client sees
it in ``Job.result_ptr``, but the SDK cannot read it.
"""

from __future__ import annotations

import base64
import re
import secrets
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cortexos.errors import PointerError

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

__all__ = [
    "DEFAULT_BUCKET",
    "DEFAULT_MAX_BLOB_BYTES",
    "Pointer",
    "data_url",
    "parse_data_url",
    "obj_pointer",
    "parse_obj_pointer",
    "BlobStore",
]

#: The object store bucket obj:// pointers are written to by default.
DEFAULT_BUCKET = "CORTEX_BLOBS"

# The scheduler refuses a context_ptr or result_ptr longer than this (its
# field limits, docs/security.md): a data: URL goes inline only below it.
MAX_POINTER_BYTES = 4096

#: The largest object read through a pointer unless told otherwise.
DEFAULT_MAX_BLOB_BYTES = 64 << 20

_BUCKET_RE = re.compile(r"^[a-zA-Z0-9_-]+$")


@dataclass(frozen=True)
class Pointer:
    """A result pointer a handler returns as is: the worker puts ``ptr`` into
    result_ptr without storing anything (``Pointer("s3://bucket/out.json")``)."""

    ptr: str


def data_url(data: bytes, media_type: str = "application/octet-stream") -> str:
    """``data:<media_type>;base64,<data>``."""
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def parse_data_url(ptr: str) -> tuple[bytes, str]:
    """The bytes and media type of a ``data:`` URL (base64 or percent-encoded).
    Raises PointerError when it is not one."""
    if not ptr.startswith("data:"):
        raise PointerError(f"not a data: URL: {ptr[:40]!r}")
    head, sep, body = ptr[5:].partition(",")
    if not sep:
        raise PointerError("data: URL without a comma")
    params = head.split(";")
    media = params[0] or "text/plain;charset=US-ASCII"
    if params[-1] == "base64":
        try:
            return base64.b64decode(body, validate=True), media
        except ValueError as e:
            raise PointerError(f"data: URL with bad base64: {e}") from e
    return urllib.parse.unquote_to_bytes(body), media


def new_key(prefix: str) -> str:
    """``<prefix>/<128 random bits as 32 hex digits>``: an object name nobody
    can guess from the job id (a pointer is a capability, docs/blobs.md), as
    the Go SDK's ``blob.NewKey`` makes them."""
    return f"{prefix}/{secrets.token_hex(16)}"


def obj_pointer(bucket: str, key: str) -> str:
    """``obj://<bucket>/<key>``."""
    return f"obj://{bucket}/{key}"


def parse_obj_pointer(ptr: str) -> tuple[str, str]:
    """The bucket and key of ``obj://<bucket>/<key>``. The key may hold slashes."""
    if not ptr.startswith("obj://"):
        raise PointerError(f"not an obj:// pointer: {ptr[:40]!r}")
    bucket, sep, key = ptr[6:].partition("/")
    if not sep or not key or not _BUCKET_RE.match(bucket):
        raise PointerError(f"obj:// pointer {ptr!r}: want obj://<bucket>/<key>, bucket of letters, digits, - and _")
    return bucket, key


class _DirectMetaJS:
    """The JetStream context of an object store, asking only what the
    shipped NATS permissions allow clients and workers (as nats.go does):
    object metadata by direct get, and an object's chunks through a
    consumer created with its name and filter subject on the object store's
    stream, never looked up by subject. The rest passes through. Object
    stores are created with allow_direct, by the scheduler (nats.go) and by
    nats-py alike."""

    def __init__(self, js: Any) -> None:
        self._js = js

    def __getattr__(self, name: str) -> Any:
        return getattr(self._js, name)

    async def get_last_msg(self, stream_name: str, subject: str, direct: bool | None = False) -> Any:
        return await self._js.get_last_msg(stream_name, subject, direct=True)

    async def subscribe(self, subject: str, **kw: Any) -> Any:
        from nats.js.api import ConsumerConfig

        parts = subject.split(".")
        if len(parts) == 4 and parts[0] == "$O" and parts[2] == "C" and kw.get("stream") is None and kw.get("config") is None:
            kw["stream"] = f"OBJ_{parts[1]}"
            kw["config"] = ConsumerConfig(name=uuid.uuid4().hex)
        return await self._js.subscribe(subject, **kw)


class BlobStore:
    """Reads and writes pointers over one NATS connection: ``data:`` inline,
    ``obj://`` in JetStream object stores."""

    def __init__(self, nc: NATS, *, bucket: str = DEFAULT_BUCKET, max_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> None:
        if not _BUCKET_RE.match(bucket):
            raise PointerError(f"bucket {bucket!r}: letters, digits, - and _ only")
        self._nc = nc
        self.bucket = bucket
        self.max_bytes = max_bytes
        self._stores: dict[str, Any] = {}

    async def _store(self, bucket: str, create: bool) -> Any:
        from nats.js.errors import BucketNotFoundError

        if bucket in self._stores:
            return self._stores[bucket]
        js = self._nc.jetstream()
        try:
            store = await js.object_store(bucket)
        except BucketNotFoundError:
            if not create:
                raise PointerError(f"object store bucket {bucket} does not exist") from None
            store = await js.create_object_store(bucket)
        # Object metadata is read with JetStream's direct get, as nats.go
        # does: it is what the shipped NATS permissions let clients and
        # workers read (docs/blobs.md; nats-py's own lookup asks
        # $JS.API.STREAM.MSG.GET, which they refuse).
        store._js = _DirectMetaJS(store._js)  # type: ignore[assignment]
        self._stores[bucket] = store
        return store

    async def put(self, key: str, data: bytes, *, bucket: str | None = None) -> str:
        """Store ``data`` under ``key`` and return its ``obj://`` pointer."""
        b = bucket or self.bucket
        try:
            store = await self._store(b, create=True)
            await store.put(key, data)
        except PointerError:
            raise
        except Exception as e:  # nats errors: no JetStream, no permission, ...
            raise PointerError(f"writing obj://{b}/{key}: {type(e).__name__}: {e}") from e
        return obj_pointer(b, key)

    async def read(self, ptr: str) -> bytes:
        """The bytes behind a ``data:`` or ``obj://`` pointer, at most
        ``max_bytes``; PointerError for anything else."""
        if ptr.startswith("data:"):
            data, _ = parse_data_url(ptr)
            return data
        if ptr.startswith("obj://"):
            bucket, key = parse_obj_pointer(ptr)
            from nats.js.errors import NotFoundError

            try:
                store = await self._store(bucket, create=False)
                info = await store.get_info(key)
                if info.size is not None and info.size > self.max_bytes:
                    raise PointerError(f"{ptr}: {info.size} bytes, limit {self.max_bytes}")
                res = await store.get(key)
            except PointerError:
                raise
            except NotFoundError:
                raise PointerError(f"{ptr}: no such object") from None
            except Exception as e:
                raise PointerError(f"reading {ptr}: {type(e).__name__}: {e}") from e
            return bytes(res.data)
        scheme = ptr.split(":", 1)[0] if ":" in ptr else ptr[:20]
        raise PointerError(f"cannot read a {scheme!r} pointer: {ptr[:80]!r} (the SDK reads data: and obj://)")
