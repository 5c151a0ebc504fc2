from cortexos.pb.v1 import heartbeat_pb2 as _heartbeat_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobPriority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_PRIORITY_UNSPECIFIED: _ClassVar[JobPriority]
    JOB_PRIORITY_BATCH: _ClassVar[JobPriority]
    JOB_PRIORITY_INTERACTIVE: _ClassVar[JobPriority]
    JOB_PRIORITY_CRITICAL: _ClassVar[JobPriority]

class JobStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATUS_UNSPECIFIED: _ClassVar[JobStatus]
    JOB_STATUS_COMPLETED: _ClassVar[JobStatus]
    JOB_STATUS_FAILED: _ClassVar[JobStatus]
    JOB_STATUS_CANCELLED: _ClassVar[JobStatus]
    JOB_STATUS_TIMEOUT: _ClassVar[JobStatus]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_PENDING: _ClassVar[JobState]
    JOB_STATE_DISPATCHED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_COMPLETED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_DENIED: _ClassVar[JobState]
    JOB_STATE_TIMEOUT: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
JOB_PRIORITY_UNSPECIFIED: JobPriority
JOB_PRIORITY_BATCH: JobPriority
JOB_PRIORITY_INTERACTIVE: JobPriority
JOB_PRIORITY_CRITICAL: JobPriority
JOB_STATUS_UNSPECIFIED: JobStatus
JOB_STATUS_COMPLETED: JobStatus
JOB_STATUS_FAILED: JobStatus
JOB_STATUS_CANCELLED: JobStatus
JOB_STATUS_TIMEOUT: JobStatus
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_PENDING: JobState
JOB_STATE_DISPATCHED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_COMPLETED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_DENIED: JobState
JOB_STATE_TIMEOUT: JobState
JOB_STATE_CANCELLED: JobState

class JobRequest(_message.Message):
    __slots__ = ("job_id", "topic", "priority", "context_ptr", "adapter_id", "env_vars", "max_attempts", "timeout_ms", "attempt", "ttl_ms", "tenant", "required_capabilities", "required_labels", "payload")
    class EnvVarsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class RequiredLabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_PTR_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    ENV_VARS_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_LABELS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    topic: str
    priority: JobPriority
    context_ptr: str
    adapter_id: str
    env_vars: _containers.ScalarMap[str, str]
    max_attempts: int
    timeout_ms: int
    attempt: int
    ttl_ms: int
    tenant: str
    required_capabilities: _containers.RepeatedScalarFieldContainer[str]
    required_labels: _containers.ScalarMap[str, str]
    payload: bytes
    def __init__(self, job_id: _Optional[str] = ..., topic: _Optional[str] = ..., priority: _Optional[_Union[JobPriority, str]] = ..., context_ptr: _Optional[str] = ..., adapter_id: _Optional[str] = ..., env_vars: _Optional[_Mapping[str, str]] = ..., max_attempts: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., attempt: _Optional[int] = ..., ttl_ms: _Optional[int] = ..., tenant: _Optional[str] = ..., required_capabilities: _Optional[_Iterable[str]] = ..., required_labels: _Optional[_Mapping[str, str]] = ..., payload: _Optional[bytes] = ...) -> None: ...

class JobResult(_message.Message):
    __slots__ = ("job_id", "status", "result_ptr", "worker_id", "execution_ms", "attempt", "error")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_PTR_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_MS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: JobStatus
    result_ptr: str
    worker_id: str
    execution_ms: int
    attempt: int
    error: str
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ..., result_ptr: _Optional[str] = ..., worker_id: _Optional[str] = ..., execution_ms: _Optional[int] = ..., attempt: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class JobAck(_message.Message):
    __slots__ = ("job_id", "attempt", "worker_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    worker_id: str
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., worker_id: _Optional[str] = ...) -> None: ...

class JobCancel(_message.Message):
    __slots__ = ("job_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class JobQuery(_message.Message):
    __slots__ = ("job_id", "state", "limit", "dead_letter", "redrive", "workers", "page_token", "topic", "tenant")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_FIELD_NUMBER: _ClassVar[int]
    REDRIVE_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    limit: int
    dead_letter: bool
    redrive: bool
    workers: bool
    page_token: str
    topic: str
    tenant: str
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., limit: _Optional[int] = ..., dead_letter: _Optional[bool] = ..., redrive: _Optional[bool] = ..., workers: _Optional[bool] = ..., page_token: _Optional[str] = ..., topic: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class JobInfo(_message.Message):
    __slots__ = ("job_id", "state", "attempt", "max_attempts", "worker_id", "result_ptr", "error", "pending_reason", "trace_id", "request", "created_ms", "updated_ms", "next_attempt_ms", "deadline_ms", "execution_ms", "dead_letter", "attempt_started_ms", "failed_attempts", "rule_id", "policy_version", "pool", "awaiting_safety")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_PTR_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PENDING_REASON_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_MS_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_MS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_MS_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_STARTED_MS_FIELD_NUMBER: _ClassVar[int]
    FAILED_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    AWAITING_SAFETY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    attempt: int
    max_attempts: int
    worker_id: str
    result_ptr: str
    error: str
    pending_reason: str
    trace_id: str
    request: JobRequest
    created_ms: int
    updated_ms: int
    next_attempt_ms: int
    deadline_ms: int
    execution_ms: int
    dead_letter: bool
    attempt_started_ms: int
    failed_attempts: int
    rule_id: str
    policy_version: str
    pool: str
    awaiting_safety: bool
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., attempt: _Optional[int] = ..., max_attempts: _Optional[int] = ..., worker_id: _Optional[str] = ..., result_ptr: _Optional[str] = ..., error: _Optional[str] = ..., pending_reason: _Optional[str] = ..., trace_id: _Optional[str] = ..., request: _Optional[_Union[JobRequest, _Mapping]] = ..., created_ms: _Optional[int] = ..., updated_ms: _Optional[int] = ..., next_attempt_ms: _Optional[int] = ..., deadline_ms: _Optional[int] = ..., execution_ms: _Optional[int] = ..., dead_letter: _Optional[bool] = ..., attempt_started_ms: _Optional[int] = ..., failed_attempts: _Optional[int] = ..., rule_id: _Optional[str] = ..., policy_version: _Optional[str] = ..., pool: _Optional[str] = ..., awaiting_safety: _Optional[bool] = ...) -> None: ...

class JobAnswer(_message.Message):
    __slots__ = ("ok", "error", "retryable", "jobs", "retry_after_ms", "rule_id", "workers", "next_page_token", "answered")
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    error: str
    retryable: bool
    jobs: _containers.RepeatedCompositeFieldContainer[JobInfo]
    retry_after_ms: int
    rule_id: str
    workers: _containers.RepeatedCompositeFieldContainer[_heartbeat_pb2.WorkerInfo]
    next_page_token: str
    answered: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ok: _Optional[bool] = ..., error: _Optional[str] = ..., retryable: _Optional[bool] = ..., jobs: _Optional[_Iterable[_Union[JobInfo, _Mapping]]] = ..., retry_after_ms: _Optional[int] = ..., rule_id: _Optional[str] = ..., workers: _Optional[_Iterable[_Union[_heartbeat_pb2.WorkerInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., answered: _Optional[_Iterable[int]] = ...) -> None: ...
