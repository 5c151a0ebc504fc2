"""cortex.v1, generated from api/proto/v1 by sdk/python/scripts/gen_proto.sh."""

from cortexos.pb.v1 import heartbeat_pb2, job_pb2, packet_pb2, safety_pb2

__all__ = ["heartbeat_pb2", "job_pb2", "packet_pb2", "safety_pb2"]
