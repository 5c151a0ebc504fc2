"""Pure logic: subjects, pointers, credentials, configuration checks."""

from __future__ import annotations

import base64

import pytest

import cortexos
from cortexos import wire
from cortexos.pointers import data_url, new_key, obj_pointer, parse_data_url, parse_obj_pointer


def test_subjects_match_pkg_wire() -> None:
    assert wire.heartbeat_subject("python", "w1") == "sys.heartbeat.python.w1"
    assert wire.result_subject("w1") == "sys.job.result.w1"
    assert wire.worker_cancel_subject("w1") == "sys.worker.w1.cancel"
    assert wire.worker_job_subject("w1") == "sys.worker.w1.job"
    assert wire.client_subject(wire.SUBJECT_SUBMIT, None) == "sys.job.submit"
    assert wire.client_subject(wire.SUBJECT_QUERY, "alice") == "sys.job.query.alice"
    assert wire.HEADER_REPLY_TO == "Cortex-Reply-To"


def test_envelope() -> None:
    p = wire.new_packet("trace", "me", now=1767323045.5)
    assert p.protocol_version == 1 and p.trace_id == "trace" and p.sender_id == "me"
    assert p.created_at.seconds == 1767323045 and p.created_at.nanos == 500_000_000


def test_data_urls() -> None:
    raw = bytes(range(256))
    assert parse_data_url(data_url(raw)) == (raw, "application/octet-stream")
    assert parse_data_url("data:,hello%20world") == (b"hello world", "text/plain;charset=US-ASCII")
    assert parse_data_url("data:text/x-python;base64," + base64.b64encode(b"print(1)").decode()) == (b"print(1)", "text/x-python")
    for bad in ("data:nocomma", "data:;base64,!!!", "http://x"):
        with pytest.raises(cortexos.PointerError):
            parse_data_url(bad)


def test_new_key_is_random() -> None:
    a, b = new_key("inputs/j1"), new_key("inputs/j1")
    assert a != b and a.startswith("inputs/j1/") and len(a) == len("inputs/j1/") + 32


def test_obj_pointers() -> None:
    assert parse_obj_pointer(obj_pointer("CORTEX_BLOBS", "results/j/1")) == ("CORTEX_BLOBS", "results/j/1")
    for bad in ("obj://", "obj://bucket", "obj://bucket/", "obj://bad.bucket/k", "s3://b/k"):
        with pytest.raises(cortexos.PointerError):
            parse_obj_pointer(bad)


def test_credentials() -> None:
    c = cortexos.Credentials.from_env({"NATS_USER": "client", "NATS_PASSWORD": "pw"})
    assert c.options() == {"user": "client", "password": "pw", "inbox_prefix": "_INBOX.client"}
    assert c.describe() == "user client" and "pw" not in c.describe()
    assert cortexos.Credentials(token="t").options(inbox_identity="alice") == {"token": "t", "inbox_prefix": "_INBOX.alice"}
    assert cortexos.Credentials().options() == {}
    with pytest.raises(cortexos.ConfigError, match="at most one"):
        cortexos.Credentials(user="u", password="p", token="t").validate()
    with pytest.raises(cortexos.ConfigError, match="together"):
        cortexos.Credentials(user="u").validate()
    with pytest.raises(cortexos.ConfigError, match="mutual TLS"):
        cortexos.Credentials(cert="/etc/hostname").validate()
    with pytest.raises(cortexos.ConfigError, match="no such file"):
        cortexos.Credentials(creds="/nonexistent.creds").validate()


def test_worker_config_is_checked() -> None:
    w = cortexos.Worker(capacity=2)
    assert w.worker_id.startswith("worker-python-") and "." not in w.worker_id
    assert w.capabilities == ["python"]
    assert cortexos.Worker(credentials=cortexos.Credentials(user="py-1", password="x")).worker_id == "py-1"
    for kw in ({"worker_id": "a.b"}, {"capacity": 0}, {"kind": "a b"}, {"labels": {"a=b": "c"}},
               {"capabilities": [" x"]}, {"lease_interval": 0}):
        with pytest.raises(cortexos.ConfigError):
            cortexos.Worker(**kw)  # type: ignore[arg-type]
    for t in ("upper", "job.", "job.*", "job.a..b", "job.a b"):
        with pytest.raises(cortexos.ConfigError):
            w.add_handler(t, lambda job: None)
    w.add_handler("job.x", lambda job: None)
    with pytest.raises(cortexos.ConfigError, match="already"):
        w.add_handler("job.x", lambda job: None)


def test_heartbeat_content() -> None:
    w = cortexos.Worker(worker_id="w1", capacity=3, labels={"gpu": "h100"}, pool="p")
    w.add_handler("job.a", lambda job: None)
    hb = w.heartbeat()
    assert (hb.worker_id, hb.capacity, hb.pool, hb.confirms, hb.direct) == ("w1", 3, "p", True, True)
    assert list(hb.topics) == ["job.a"] and dict(hb.labels) == {"gpu": "h100"} and hb.interval_ms == 5000
    assert len(hb.held) == 0


async def test_client_refusals_are_typed() -> None:
    from cortexos.client import _refusal
    from cortexos.pb.v1 import job_pb2

    def ans(**kw: object) -> job_pb2.JobAnswer:
        return job_pb2.JobAnswer(**kw)  # type: ignore[arg-type]

    denied = _refusal(ans(error="denied", rule_id="r", jobs=[job_pb2.JobInfo(job_id="j", state=job_pb2.JOB_STATE_DENIED)]))
    assert isinstance(denied, cortexos.Denied) and denied.rule_id == "r" and denied.job is not None
    thr = _refusal(ans(error="slow down", retryable=True, retry_after_ms=1500, rule_id="rate"))
    assert isinstance(thr, cortexos.Throttled) and thr.retry_after == 1.5 and "retry after 1.5s" in str(thr)
    assert isinstance(_refusal(ans(error="conflict: job_id j already exists with different content")), cortexos.Conflict)
    assert isinstance(_refusal(ans(error="job already COMPLETED")), cortexos.Conflict)
    assert isinstance(_refusal(ans(error="job x: jobstore: job not found")), cortexos.NotFound)
    plain = _refusal(ans(error="invalid job_id"))
    assert type(plain) is cortexos.Refused and isinstance(plain, cortexos.CortexError)


def test_worker_log_lines_name_the_kind(caplog: pytest.LogCaptureFixture) -> None:
    """A worker's log lines start with [WORKER <kind>], as the design
    document's workers print theirs, whatever the message's own % args."""
    import logging

    from cortexos.worker import _KindLog

    wlog = _KindLog(logging.getLogger("cortexos.worker"), {"kind": "py%s"})
    with caplog.at_level(logging.INFO, logger="cortexos.worker"):
        wlog.info("running worker_id=%s", "w1")
    assert caplog.messages == ["[WORKER py%s] running worker_id=w1"], caplog.messages
