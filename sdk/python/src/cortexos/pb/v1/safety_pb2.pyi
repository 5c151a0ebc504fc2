from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PolicyDecision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POLICY_DECISION_UNSPECIFIED: _ClassVar[PolicyDecision]
    POLICY_DECISION_ALLOW: _ClassVar[PolicyDecision]
    POLICY_DECISION_DENY: _ClassVar[PolicyDecision]
    POLICY_DECISION_THROTTLE: _ClassVar[PolicyDecision]
POLICY_DECISION_UNSPECIFIED: PolicyDecision
POLICY_DECISION_ALLOW: PolicyDecision
POLICY_DECISION_DENY: PolicyDecision
POLICY_DECISION_THROTTLE: PolicyDecision

class SafetyVerdict(_message.Message):
    __slots__ = ("decision", "reason", "rule_id", "policy_version", "retry_after_ms", "job_id", "tenant", "topic", "decided_ms", "decided_by")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    DECIDED_MS_FIELD_NUMBER: _ClassVar[int]
    DECIDED_BY_FIELD_NUMBER: _ClassVar[int]
    decision: PolicyDecision
    reason: str
    rule_id: str
    policy_version: str
    retry_after_ms: int
    job_id: str
    tenant: str
    topic: str
    decided_ms: int
    decided_by: str
    def __init__(self, decision: _Optional[_Union[PolicyDecision, str]] = ..., reason: _Optional[str] = ..., rule_id: _Optional[str] = ..., policy_version: _Optional[str] = ..., retry_after_ms: _Optional[int] = ..., job_id: _Optional[str] = ..., tenant: _Optional[str] = ..., topic: _Optional[str] = ..., decided_ms: _Optional[int] = ..., decided_by: _Optional[str] = ...) -> None: ...
