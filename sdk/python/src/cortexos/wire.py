"""The CortexOS bus contract: subjects, the BusPacket envelope, and decoding
with a size cap. The same contract as the Go packages pkg/wire and
internal/infrastructure/bus; test/vectors holds encoded packets that both
sides check byte for byte.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from cortexos.pb.v1 import packet_pb2

__all__ = [
    "PROTOCOL_VERSION",
    "DEFAULT_MAX_PACKET_BYTES",
    "SUBJECT_SUBMIT",
    "SUBJECT_QUERY",
    "SUBJECT_CANCEL",
    "SUBJECT_RESULT",
    "JOB_SUBJECT_PREFIX",
    "HEADER_REPLY_TO",
    "HEADER_EXPECTED_STREAM",
    "ANSWERED_SUBMIT_STREAM",
    "SUBMIT_RETRY_ERROR",
    "SUBMIT_PATIENCE",
    "heartbeat_subject",
    "result_subject",
    "worker_cancel_subject",
    "worker_job_subject",
    "client_subject",
    "JOB_EVENT_PREFIX",
    "NO_TENANT_TOKEN",
    "job_event_subject",
    "job_events_of",
    "SUBJECT_JOB_FOLLOW",
    "FOLLOW_TTL",
    "FOLLOW_INTERVAL",
    "follow_packet",
    "new_packet",
    "encode",
    "decode",
    "PacketError",
    "Malformed",
    "TooLarge",
    "UnknownPayload",
    "ErrorCounts",
]

#: BusPacket.protocol_version this code speaks.
PROTOCOL_VERSION = 1

#: The largest packet accepted or sent: the NATS server's default max_payload.
#: Larger inputs and outputs belong behind context_ptr / result_ptr.
DEFAULT_MAX_PACKET_BYTES = 1 << 20

SUBJECT_SUBMIT = "sys.job.submit"
SUBJECT_QUERY = "sys.job.query"
SUBJECT_CANCEL = "sys.job.cancel"
SUBJECT_RESULT = "sys.job.result"
JOB_SUBJECT_PREFIX = "job."

#: On a submission: the subject the scheduler answers on with a JobAnswer. A
#: NATS reply subject cannot serve, since a stream capturing sys.job.submit
#: answers it with the stream's publish acknowledgement.
HEADER_REPLY_TO = "Cortex-Reply-To"

#: On a submission published for an answer: ``Nats-Expected-Stream`` set to
#: ANSWERED_SUBMIT_STREAM, a stream that does not exist, so that the intake
#: stream (CORTEX_JOB_SUBMIT) does not store it and one scheduler replica
#: takes it over core NATS and answers it (Go: bus.AnsweredSubmitStream).
#: Unanswered within SUBMIT_PATIENCE seconds, or answered retryable with
#: SUBMIT_RETRY_ERROR, it is published again without the header, for the
#: stream to keep (docs/protocol.md, "Submitting a job").
HEADER_EXPECTED_STREAM = "Nats-Expected-Stream"
ANSWERED_SUBMIT_STREAM = "CORTEX_ANSWERED_SUBMIT"
SUBMIT_RETRY_ERROR = "the job store write failed: publish the submission for the stream"
SUBMIT_PATIENCE = 3.0


def heartbeat_subject(kind: str, worker_id: str) -> str:
    """Where worker ``worker_id`` of ``kind`` heartbeats: sys.heartbeat.<kind>.<id>."""
    return f"sys.heartbeat.{kind}.{worker_id}"


def result_subject(worker_id: str) -> str:
    """Where worker ``worker_id`` publishes its results: sys.job.result.<id>."""
    return f"{SUBJECT_RESULT}.{worker_id}"


def worker_cancel_subject(worker_id: str) -> str:
    """Where a worker hears cancellations of the jobs it holds."""
    return f"sys.worker.{worker_id}.cancel"


def worker_job_subject(worker_id: str) -> str:
    """A direct worker's own job subject, sys.worker.<id>.job."""
    return f"sys.worker.{worker_id}.job"


def client_subject(base: str, identity: str | None) -> str:
    """A client subject (submit, query, cancel) for a client identity: the bare
    subject without one, ``<base>.<identity>`` with one."""
    return f"{base}.{identity}" if identity else base


#: Starts every job event subject. A scheduler publishes each change it
#: writes to a job on sys.job.event.<tenant>.<job_id> as a BusPacket carrying
#: a JobAnswer{ok, jobs: [the job]} (Go: wire.JobEventSubject).
JOB_EVENT_PREFIX = "sys.job.event."

#: Stands for "no tenant" in a job event subject.
NO_TENANT_TOKEN = "_"


def _literal_subject(s: str) -> bool:
    """A subject of non-empty tokens, no wildcards, no blanks or control bytes."""
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in s):
        return False
    return all(tok not in ("", "*", ">") for tok in s.split("."))


def _subject_token(s: str) -> bool:
    return (
        s != ""
        and not any(c in ".*>" or c.isspace() or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in s)
        and "\ufffd" not in s
    )


def job_event_subject(tenant: str, job_id: str) -> str | None:
    """The subject of the events of job ``job_id`` of ``tenant`` ("" for
    none): sys.job.event.<tenant>.<job_id>, with "_" for no tenant. None
    when there is none: a tenant that is not one subject token (a ".",
    "*", ">", blank or control character) or is "_" itself, since its
    subject could fall under another tenant's; a job id that is not a
    valid subject."""
    if tenant and (tenant == NO_TENANT_TOKEN or not _subject_token(tenant)):
        return None
    if not job_id or not _literal_subject(job_id):
        return None
    return f"{JOB_EVENT_PREFIX}{tenant or NO_TENANT_TOKEN}.{job_id}"


def job_events_of(job_id: str) -> str:
    """The subject matching the events of job ``job_id`` whatever its tenant
    (sys.job.event.*.<job_id>), for a client that may read them all."""
    return f"{JOB_EVENT_PREFIX}*.{job_id}"


#: Where a follower announces itself. A scheduler publishes a job's events
#: only while someone follows it: the follower announces a BusPacket
#: carrying a JobQuery whose job_id names the job (empty: every job), and
#: again every FOLLOW_INTERVAL seconds while it follows; each announcement
#: lasts FOLLOW_TTL seconds (Go: wire.SubjectJobFollow).
SUBJECT_JOB_FOLLOW = "sys.job.follow"

#: Seconds an announcement on SUBJECT_JOB_FOLLOW lasts.
FOLLOW_TTL = 30.0

#: Seconds between a follower's announcements: a third of FOLLOW_TTL, so
#: that one lost announcement ends no follow.
FOLLOW_INTERVAL = FOLLOW_TTL / 3


def follow_packet(sender_id: str, job_id: str = "") -> packet_pb2.BusPacket:
    """The announcement that ``sender_id`` follows job ``job_id``, or every
    job when it is empty."""
    p = new_packet("", sender_id)
    p.job_query.job_id = job_id
    p.job_query.SetInParent()
    return p


def new_packet(trace_id: str, sender_id: str, now: float | None = None) -> packet_pb2.BusPacket:
    """A BusPacket envelope stamped now (or at ``now``, seconds since the epoch)."""
    p = packet_pb2.BusPacket(trace_id=trace_id, sender_id=sender_id, protocol_version=PROTOCOL_VERSION)
    t = time.time() if now is None else now
    sec = int(t)
    p.created_at.seconds = sec
    p.created_at.nanos = int((t - sec) * 1e9)
    return p


class PacketError(Exception):
    """A packet that was not accepted."""


class Malformed(PacketError):
    """The bytes do not decode as a BusPacket (bad wire format or strings
    that are not UTF-8)."""


class TooLarge(PacketError):
    """A packet over the size cap, in or out."""


class UnknownPayload(PacketError):
    """A packet without a payload this version knows (empty, or a oneof member
    added by a newer protocol)."""


def encode(packet: packet_pb2.BusPacket, max_bytes: int = DEFAULT_MAX_PACKET_BYTES) -> bytes:
    """Serialize ``packet``, refusing one larger than ``max_bytes`` (0: no cap)."""
    size = packet.ByteSize()
    if max_bytes > 0 and size > max_bytes:
        raise TooLarge(f"packet of {size} bytes, limit {max_bytes}")
    data: bytes = packet.SerializeToString()
    return data


def decode(data: bytes, max_bytes: int = DEFAULT_MAX_PACKET_BYTES) -> packet_pb2.BusPacket:
    """Check the size of ``data``, then parse it. Raises Malformed, TooLarge or
    UnknownPayload, never anything else."""
    if max_bytes > 0 and len(data) > max_bytes:
        raise TooLarge(f"{len(data)} bytes, limit {max_bytes}")
    p = packet_pb2.BusPacket()
    try:
        p.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as e:  # the C and Python parsers differ
        raise Malformed(str(e) or "does not decode") from e
    if p.WhichOneof("payload") is None:
        raise UnknownPayload("no known payload")
    return p


@dataclass
class ErrorCounts:
    """Packets dropped on receipt, by cause."""

    malformed: int = 0
    too_large: int = 0
    unknown_payload: int = 0

    def count(self, err: PacketError) -> None:
        if isinstance(err, TooLarge):
            self.too_large += 1
        elif isinstance(err, UnknownPayload):
            self.unknown_payload += 1
        else:
            self.malformed += 1
