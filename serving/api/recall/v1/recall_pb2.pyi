from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Source(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOURCE_UNSPECIFIED: _ClassVar[Source]
    SOURCE_USER_VECTOR: _ClassVar[Source]
    SOURCE_FALLBACK: _ClassVar[Source]
    SOURCE_FALLBACK_DEGRADED: _ClassVar[Source]
SOURCE_UNSPECIFIED: Source
SOURCE_USER_VECTOR: Source
SOURCE_FALLBACK: Source
SOURCE_FALLBACK_DEGRADED: Source

class RecallRequest(_message.Message):
    __slots__ = ("user_id", "k", "exclude_item_ids", "exclude_seen", "nprobe", "refine_factor")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_SEEN_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    REFINE_FACTOR_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    k: int
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    exclude_seen: bool
    nprobe: int
    refine_factor: int
    def __init__(self, user_id: _Optional[str] = ..., k: _Optional[int] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., exclude_seen: _Optional[bool] = ..., nprobe: _Optional[int] = ..., refine_factor: _Optional[int] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("item_id", "score")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class RecallResponse(_message.Message):
    __slots__ = ("candidates", "model_version", "index_version", "source", "degraded_reason")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_REASON_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    model_version: str
    index_version: str
    source: Source
    degraded_reason: str
    def __init__(self, candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., model_version: _Optional[str] = ..., index_version: _Optional[str] = ..., source: _Optional[_Union[Source, str]] = ..., degraded_reason: _Optional[str] = ...) -> None: ...

class BatchRecallRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RecallRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[RecallRequest, _Mapping]]] = ...) -> None: ...

class BatchRecallResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[RecallResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[RecallResponse, _Mapping]]] = ...) -> None: ...

class Interaction(_message.Message):
    __slots__ = ("user_id", "item_id", "timestamp")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    item_id: str
    timestamp: int
    def __init__(self, user_id: _Optional[str] = ..., item_id: _Optional[str] = ..., timestamp: _Optional[int] = ...) -> None: ...

class RecordInteractionsRequest(_message.Message):
    __slots__ = ("interactions",)
    INTERACTIONS_FIELD_NUMBER: _ClassVar[int]
    interactions: _containers.RepeatedCompositeFieldContainer[Interaction]
    def __init__(self, interactions: _Optional[_Iterable[_Union[Interaction, _Mapping]]] = ...) -> None: ...

class RecordInteractionsReply(_message.Message):
    __slots__ = ("accepted", "unknown_items", "unknown_item_ids")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ITEMS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    unknown_items: int
    unknown_item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, accepted: _Optional[int] = ..., unknown_items: _Optional[int] = ..., unknown_item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("index_version", "model_version", "item_count", "loaded_at_unix", "redis_healthy", "redis_detail", "factory", "nprobe", "user_vectors_loaded", "user_vector_count", "recall_port", "failed_calls", "redis_breaker_state", "fresh_segment_size", "deny_set_size")
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ITEM_COUNT_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    REDIS_HEALTHY_FIELD_NUMBER: _ClassVar[int]
    REDIS_DETAIL_FIELD_NUMBER: _ClassVar[int]
    FACTORY_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    USER_VECTORS_LOADED_FIELD_NUMBER: _ClassVar[int]
    USER_VECTOR_COUNT_FIELD_NUMBER: _ClassVar[int]
    RECALL_PORT_FIELD_NUMBER: _ClassVar[int]
    FAILED_CALLS_FIELD_NUMBER: _ClassVar[int]
    REDIS_BREAKER_STATE_FIELD_NUMBER: _ClassVar[int]
    FRESH_SEGMENT_SIZE_FIELD_NUMBER: _ClassVar[int]
    DENY_SET_SIZE_FIELD_NUMBER: _ClassVar[int]
    index_version: str
    model_version: str
    item_count: int
    loaded_at_unix: float
    redis_healthy: bool
    redis_detail: str
    factory: str
    nprobe: int
    user_vectors_loaded: bool
    user_vector_count: int
    recall_port: int
    failed_calls: int
    redis_breaker_state: str
    fresh_segment_size: int
    deny_set_size: int
    def __init__(self, index_version: _Optional[str] = ..., model_version: _Optional[str] = ..., item_count: _Optional[int] = ..., loaded_at_unix: _Optional[float] = ..., redis_healthy: _Optional[bool] = ..., redis_detail: _Optional[str] = ..., factory: _Optional[str] = ..., nprobe: _Optional[int] = ..., user_vectors_loaded: _Optional[bool] = ..., user_vector_count: _Optional[int] = ..., recall_port: _Optional[int] = ..., failed_calls: _Optional[int] = ..., redis_breaker_state: _Optional[str] = ..., fresh_segment_size: _Optional[int] = ..., deny_set_size: _Optional[int] = ...) -> None: ...

class LoadIndexRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: str
    def __init__(self, version: _Optional[str] = ...) -> None: ...

class LoadIndexResponse(_message.Message):
    __slots__ = ("index_version", "model_version", "item_count", "previous_index_version")
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ITEM_COUNT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    index_version: str
    model_version: str
    item_count: int
    previous_index_version: str
    def __init__(self, index_version: _Optional[str] = ..., model_version: _Optional[str] = ..., item_count: _Optional[int] = ..., previous_index_version: _Optional[str] = ...) -> None: ...

class NewItem(_message.Message):
    __slots__ = ("item_id", "features")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    features: _containers.ScalarMap[str, str]
    def __init__(self, item_id: _Optional[str] = ..., features: _Optional[_Mapping[str, str]] = ...) -> None: ...

class UpsertItemsRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[NewItem]
    def __init__(self, items: _Optional[_Iterable[_Union[NewItem, _Mapping]]] = ...) -> None: ...

class UpsertItemsResponse(_message.Message):
    __slots__ = ("upserted", "model_version")
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    model_version: str
    def __init__(self, upserted: _Optional[int] = ..., model_version: _Optional[str] = ...) -> None: ...

class RemoveItemsRequest(_message.Message):
    __slots__ = ("item_ids", "lift")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    LIFT_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    lift: bool
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ..., lift: _Optional[bool] = ...) -> None: ...

class RemoveItemsResponse(_message.Message):
    __slots__ = ("changed", "deny_set_size")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    DENY_SET_SIZE_FIELD_NUMBER: _ClassVar[int]
    changed: int
    deny_set_size: int
    def __init__(self, changed: _Optional[int] = ..., deny_set_size: _Optional[int] = ...) -> None: ...
