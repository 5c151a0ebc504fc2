"""The shared wire vectors of test/vectors: the Python SDK reads and writes
every one byte for byte as the Go code does (test/vectors/vectors_test.go
checks the same files), and refuses the reject_* ones with the same class of
error."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import json_format

from cortexos import wire
from cortexos.pb.v1 import packet_pb2

VECTORS = Path(__file__).resolve().parents[3] / "test" / "vectors"
VALID = sorted(VECTORS.glob("*.json"))
REJECT = sorted(VECTORS.glob("reject_*.bin"))


def test_vectors_exist() -> None:
    assert len(VALID) >= 10 and len(REJECT) >= 6


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_vector(path: Path) -> None:
    want = json_format.Parse(path.read_text(), packet_pb2.BusPacket())
    data = path.with_suffix(".bin").read_bytes()
    assert want.SerializeToString(deterministic=True) == data
    assert wire.encode(want) == data
    got = wire.decode(data)
    assert got == want


@pytest.mark.parametrize("path", REJECT, ids=lambda p: p.stem)
def test_reject(path: Path) -> None:
    cls = wire.UnknownPayload if path.stem.startswith("reject_unknown_payload_") else wire.Malformed
    with pytest.raises(cls):
        wire.decode(path.read_bytes())


def test_over_the_cap_is_refused_before_decoding() -> None:
    with pytest.raises(wire.TooLarge):
        wire.decode(b"\x0a\x01a" * 100, max_bytes=64)
    p = wire.new_packet("t", "s")
    p.job_result.error = "x" * 100
    with pytest.raises(wire.TooLarge):
        wire.encode(p, max_bytes=64)
