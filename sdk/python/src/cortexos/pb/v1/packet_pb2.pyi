import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from cortexos.pb.v1 import job_pb2 as _job_pb2
from cortexos.pb.v1 import heartbeat_pb2 as _heartbeat_pb2
from cortexos.pb.v1 import safety_pb2 as _safety_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BusPacket(_message.Message):
    __slots__ = ("trace_id", "sender_id", "created_at", "protocol_version", "job_request", "job_result", "heartbeat", "alert", "job_ack", "job_cancel", "job_query", "job_answer", "safety_verdict")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    JOB_REQUEST_FIELD_NUMBER: _ClassVar[int]
    JOB_RESULT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    JOB_ACK_FIELD_NUMBER: _ClassVar[int]
    JOB_CANCEL_FIELD_NUMBER: _ClassVar[int]
    JOB_QUERY_FIELD_NUMBER: _ClassVar[int]
    JOB_ANSWER_FIELD_NUMBER: _ClassVar[int]
    SAFETY_VERDICT_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    sender_id: str
    created_at: _timestamp_pb2.Timestamp
    protocol_version: int
    job_request: _job_pb2.JobRequest
    job_result: _job_pb2.JobResult
    heartbeat: _heartbeat_pb2.Heartbeat
    alert: SystemAlert
    job_ack: _job_pb2.JobAck
    job_cancel: _job_pb2.JobCancel
    job_query: _job_pb2.JobQuery
    job_answer: _job_pb2.JobAnswer
    safety_verdict: _safety_pb2.SafetyVerdict
    def __init__(self, trace_id: _Optional[str] = ..., sender_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., protocol_version: _Optional[int] = ..., job_request: _Optional[_Union[_job_pb2.JobRequest, _Mapping]] = ..., job_result: _Optional[_Union[_job_pb2.JobResult, _Mapping]] = ..., heartbeat: _Optional[_Union[_heartbeat_pb2.Heartbeat, _Mapping]] = ..., alert: _Optional[_Union[SystemAlert, _Mapping]] = ..., job_ack: _Optional[_Union[_job_pb2.JobAck, _Mapping]] = ..., job_cancel: _Optional[_Union[_job_pb2.JobCancel, _Mapping]] = ..., job_query: _Optional[_Union[_job_pb2.JobQuery, _Mapping]] = ..., job_answer: _Optional[_Union[_job_pb2.JobAnswer, _Mapping]] = ..., safety_verdict: _Optional[_Union[_safety_pb2.SafetyVerdict, _Mapping]] = ...) -> None: ...

class SystemAlert(_message.Message):
    __slots__ = ("level", "message", "component")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    level: str
    message: str
    component: str
    def __init__(self, level: _Optional[str] = ..., message: _Optional[str] = ..., component: _Optional[str] = ...) -> None: ...
