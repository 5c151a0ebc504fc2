from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Heartbeat(_message.Message):
    __slots__ = ("worker_id", "region", "type", "cpu_load", "gpu_utilization", "active_jobs", "capabilities", "interval_ms", "held", "draining", "topics", "confirms", "capacity", "labels", "pool", "direct")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CPU_LOAD_FIELD_NUMBER: _ClassVar[int]
    GPU_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_JOBS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    CONFIRMS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    DIRECT_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    region: str
    type: str
    cpu_load: float
    gpu_utilization: float
    active_jobs: int
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    interval_ms: int
    held: _containers.RepeatedCompositeFieldContainer[HeldJob]
    draining: bool
    topics: _containers.RepeatedScalarFieldContainer[str]
    confirms: bool
    capacity: int
    labels: _containers.ScalarMap[str, str]
    pool: str
    direct: bool
    def __init__(self, worker_id: _Optional[str] = ..., region: _Optional[str] = ..., type: _Optional[str] = ..., cpu_load: _Optional[float] = ..., gpu_utilization: _Optional[float] = ..., active_jobs: _Optional[int] = ..., capabilities: _Optional[_Iterable[str]] = ..., interval_ms: _Optional[int] = ..., held: _Optional[_Iterable[_Union[HeldJob, _Mapping]]] = ..., draining: _Optional[bool] = ..., topics: _Optional[_Iterable[str]] = ..., confirms: _Optional[bool] = ..., capacity: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., pool: _Optional[str] = ..., direct: _Optional[bool] = ...) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("heartbeat", "last_seen_ms", "assigned")
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_MS_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_FIELD_NUMBER: _ClassVar[int]
    heartbeat: Heartbeat
    last_seen_ms: int
    assigned: int
    def __init__(self, heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., last_seen_ms: _Optional[int] = ..., assigned: _Optional[int] = ...) -> None: ...

class HeldJob(_message.Message):
    __slots__ = ("job_id", "attempt")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...
