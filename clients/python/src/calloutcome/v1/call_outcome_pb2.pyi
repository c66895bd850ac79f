import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Category(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CATEGORY_UNSPECIFIED: _ClassVar[Category]
    CATEGORY_ANSWERED: _ClassVar[Category]
    CATEGORY_BUSY: _ClassVar[Category]
    CATEGORY_NO_ANSWER: _ClassVar[Category]
    CATEGORY_UNAVAILABLE: _ClassVar[Category]
    CATEGORY_DECLINED: _ClassVar[Category]
    CATEGORY_REJECTED_UNWANTED: _ClassVar[Category]
    CATEGORY_INVALID_NUMBER: _ClassVar[Category]
    CATEGORY_REDIRECT: _ClassVar[Category]
    CATEGORY_CANCELED: _ClassVar[Category]
    CATEGORY_CONFIG_ERROR: _ClassVar[Category]
    CATEGORY_NETWORK_ERROR: _ClassVar[Category]
    CATEGORY_OTHER: _ClassVar[Category]

class Fault(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAULT_UNSPECIFIED: _ClassVar[Fault]
    FAULT_NONE: _ClassVar[Fault]
    FAULT_CALLEE_CHOICE: _ClassVar[Fault]
    FAULT_CALLEE_DEVICE: _ClassVar[Fault]
    FAULT_NETWORK: _ClassVar[Fault]
    FAULT_CALLER_CONFIG: _ClassVar[Fault]
    FAULT_CALLER_DATA: _ClassVar[Fault]
    FAULT_CALLER_ACTION: _ClassVar[Fault]
    FAULT_UNKNOWN: _ClassVar[Fault]

class Retryable(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RETRYABLE_UNSPECIFIED: _ClassVar[Retryable]
    RETRYABLE_NO: _ClassVar[Retryable]
    RETRYABLE_LATER: _ClassVar[Retryable]
    RETRYABLE_NOW_ALTERNATE_ROUTE: _ClassVar[Retryable]

class RetryAfterScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RETRY_AFTER_SCOPE_UNSPECIFIED: _ClassVar[RetryAfterScope]
    RETRY_AFTER_SCOPE_CALLEE: _ClassVar[RetryAfterScope]
    RETRY_AFTER_SCOPE_ROUTE: _ClassVar[RetryAfterScope]

class ClassificationBasis(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLASSIFICATION_BASIS_UNSPECIFIED: _ClassVar[ClassificationBasis]
    CLASSIFICATION_BASIS_SIP_CODE: _ClassVar[ClassificationBasis]
    CLASSIFICATION_BASIS_Q850_REASON: _ClassVar[ClassificationBasis]
    CLASSIFICATION_BASIS_ANALYTICS_BLOCK: _ClassVar[ClassificationBasis]
    CLASSIFICATION_BASIS_PROVIDER_OVERRIDE: _ClassVar[ClassificationBasis]
    CLASSIFICATION_BASIS_PROVIDER_CAUSE: _ClassVar[ClassificationBasis]
    CLASSIFICATION_BASIS_OVERRIDE: _ClassVar[ClassificationBasis]

class Q850CauseSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    Q850_CAUSE_SOURCE_UNSPECIFIED: _ClassVar[Q850CauseSource]
    Q850_CAUSE_SOURCE_REASON_HEADER: _ClassVar[Q850CauseSource]
    Q850_CAUSE_SOURCE_PROVIDER: _ClassVar[Q850CauseSource]
    Q850_CAUSE_SOURCE_SIP_MAPPING: _ClassVar[Q850CauseSource]

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_UNSPECIFIED: _ClassVar[Action]
    ACTION_NONE: _ClassVar[Action]
    ACTION_RETRY_LATER: _ClassVar[Action]
    ACTION_RETRY_NOW_ALTERNATE_ROUTE: _ClassVar[Action]
    ACTION_STOP: _ClassVar[Action]
    ACTION_FIX_NUMBER: _ClassVar[Action]
    ACTION_FIX_CONFIGURATION: _ClassVar[Action]

class Alternative(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALTERNATIVE_UNSPECIFIED: _ClassVar[Alternative]
    ALTERNATIVE_SMS: _ClassVar[Alternative]
    ALTERNATIVE_CALLBACK: _ClassVar[Alternative]
    ALTERNATIVE_EMAIL: _ClassVar[Alternative]
    ALTERNATIVE_VOICEMAIL: _ClassVar[Alternative]
    ALTERNATIVE_CONTACT_TARGET: _ClassVar[Alternative]

class StartPosition(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    START_POSITION_UNSPECIFIED: _ClassVar[StartPosition]
    START_POSITION_NEW: _ClassVar[StartPosition]
    START_POSITION_OLDEST: _ClassVar[StartPosition]

class GapReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GAP_REASON_UNSPECIFIED: _ClassVar[GapReason]
    GAP_REASON_EVICTED: _ClassVar[GapReason]
    GAP_REASON_EPOCH_CHANGED: _ClassVar[GapReason]
CATEGORY_UNSPECIFIED: Category
CATEGORY_ANSWERED: Category
CATEGORY_BUSY: Category
CATEGORY_NO_ANSWER: Category
CATEGORY_UNAVAILABLE: Category
CATEGORY_DECLINED: Category
CATEGORY_REJECTED_UNWANTED: Category
CATEGORY_INVALID_NUMBER: Category
CATEGORY_REDIRECT: Category
CATEGORY_CANCELED: Category
CATEGORY_CONFIG_ERROR: Category
CATEGORY_NETWORK_ERROR: Category
CATEGORY_OTHER: Category
FAULT_UNSPECIFIED: Fault
FAULT_NONE: Fault
FAULT_CALLEE_CHOICE: Fault
FAULT_CALLEE_DEVICE: Fault
FAULT_NETWORK: Fault
FAULT_CALLER_CONFIG: Fault
FAULT_CALLER_DATA: Fault
FAULT_CALLER_ACTION: Fault
FAULT_UNKNOWN: Fault
RETRYABLE_UNSPECIFIED: Retryable
RETRYABLE_NO: Retryable
RETRYABLE_LATER: Retryable
RETRYABLE_NOW_ALTERNATE_ROUTE: Retryable
RETRY_AFTER_SCOPE_UNSPECIFIED: RetryAfterScope
RETRY_AFTER_SCOPE_CALLEE: RetryAfterScope
RETRY_AFTER_SCOPE_ROUTE: RetryAfterScope
CLASSIFICATION_BASIS_UNSPECIFIED: ClassificationBasis
CLASSIFICATION_BASIS_SIP_CODE: ClassificationBasis
CLASSIFICATION_BASIS_Q850_REASON: ClassificationBasis
CLASSIFICATION_BASIS_ANALYTICS_BLOCK: ClassificationBasis
CLASSIFICATION_BASIS_PROVIDER_OVERRIDE: ClassificationBasis
CLASSIFICATION_BASIS_PROVIDER_CAUSE: ClassificationBasis
CLASSIFICATION_BASIS_OVERRIDE: ClassificationBasis
Q850_CAUSE_SOURCE_UNSPECIFIED: Q850CauseSource
Q850_CAUSE_SOURCE_REASON_HEADER: Q850CauseSource
Q850_CAUSE_SOURCE_PROVIDER: Q850CauseSource
Q850_CAUSE_SOURCE_SIP_MAPPING: Q850CauseSource
ACTION_UNSPECIFIED: Action
ACTION_NONE: Action
ACTION_RETRY_LATER: Action
ACTION_RETRY_NOW_ALTERNATE_ROUTE: Action
ACTION_STOP: Action
ACTION_FIX_NUMBER: Action
ACTION_FIX_CONFIGURATION: Action
ALTERNATIVE_UNSPECIFIED: Alternative
ALTERNATIVE_SMS: Alternative
ALTERNATIVE_CALLBACK: Alternative
ALTERNATIVE_EMAIL: Alternative
ALTERNATIVE_VOICEMAIL: Alternative
ALTERNATIVE_CONTACT_TARGET: Alternative
START_POSITION_UNSPECIFIED: StartPosition
START_POSITION_NEW: StartPosition
START_POSITION_OLDEST: StartPosition
GAP_REASON_UNSPECIFIED: GapReason
GAP_REASON_EVICTED: GapReason
GAP_REASON_EPOCH_CHANGED: GapReason

class CallOutcome(_message.Message):
    __slots__ = ("call_id", "attempt", "to", "sip", "raw_sip_response", "provider", "started_at", "ended_at", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    SIP_FIELD_NUMBER: _ClassVar[int]
    RAW_SIP_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    attempt: int
    to: str
    sip: SipResponse
    raw_sip_response: bytes
    provider: ProviderCause
    started_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    labels: _containers.ScalarMap[str, str]
    def __init__(self, call_id: _Optional[str] = ..., attempt: _Optional[int] = ..., to: _Optional[str] = ..., sip: _Optional[_Union[SipResponse, _Mapping]] = ..., raw_sip_response: _Optional[bytes] = ..., provider: _Optional[_Union[ProviderCause, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., **kwargs) -> None: ...

class SipResponse(_message.Message):
    __slots__ = ("code", "reason_phrase", "reason_header", "retry_after_header")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_PHRASE_FIELD_NUMBER: _ClassVar[int]
    REASON_HEADER_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_HEADER_FIELD_NUMBER: _ClassVar[int]
    code: int
    reason_phrase: str
    reason_header: str
    retry_after_header: str
    def __init__(self, code: _Optional[int] = ..., reason_phrase: _Optional[str] = ..., reason_header: _Optional[str] = ..., retry_after_header: _Optional[str] = ...) -> None: ...

class ProviderCause(_message.Message):
    __slots__ = ("name", "cause")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    name: str
    cause: str
    def __init__(self, name: _Optional[str] = ..., cause: _Optional[str] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("category", "fault", "retryable", "sip_code", "reported_sip_code", "sip_phrase", "q850_cause", "q850_cause_source", "q850_location", "reason_text", "retry_after_seconds", "retry_after_scope", "summary", "basis", "override_name")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    FAULT_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    SIP_CODE_FIELD_NUMBER: _ClassVar[int]
    REPORTED_SIP_CODE_FIELD_NUMBER: _ClassVar[int]
    SIP_PHRASE_FIELD_NUMBER: _ClassVar[int]
    Q850_CAUSE_FIELD_NUMBER: _ClassVar[int]
    Q850_CAUSE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    Q850_LOCATION_FIELD_NUMBER: _ClassVar[int]
    REASON_TEXT_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_SCOPE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_NAME_FIELD_NUMBER: _ClassVar[int]
    category: Category
    fault: Fault
    retryable: Retryable
    sip_code: int
    reported_sip_code: int
    sip_phrase: str
    q850_cause: int
    q850_cause_source: Q850CauseSource
    q850_location: str
    reason_text: str
    retry_after_seconds: int
    retry_after_scope: RetryAfterScope
    summary: str
    basis: ClassificationBasis
    override_name: str
    def __init__(self, category: _Optional[_Union[Category, str]] = ..., fault: _Optional[_Union[Fault, str]] = ..., retryable: _Optional[_Union[Retryable, str]] = ..., sip_code: _Optional[int] = ..., reported_sip_code: _Optional[int] = ..., sip_phrase: _Optional[str] = ..., q850_cause: _Optional[int] = ..., q850_cause_source: _Optional[_Union[Q850CauseSource, str]] = ..., q850_location: _Optional[str] = ..., reason_text: _Optional[str] = ..., retry_after_seconds: _Optional[int] = ..., retry_after_scope: _Optional[_Union[RetryAfterScope, str]] = ..., summary: _Optional[str] = ..., basis: _Optional[_Union[ClassificationBasis, str]] = ..., override_name: _Optional[str] = ...) -> None: ...

class RetryPlan(_message.Message):
    __slots__ = ("not_before", "delay_seconds", "next_attempt", "max_attempts", "honours_retry_after")
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    DELAY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    HONOURS_RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    not_before: _timestamp_pb2.Timestamp
    delay_seconds: int
    next_attempt: int
    max_attempts: int
    honours_retry_after: bool
    def __init__(self, not_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delay_seconds: _Optional[int] = ..., next_attempt: _Optional[int] = ..., max_attempts: _Optional[int] = ..., honours_retry_after: bool = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("action", "notify_user", "user_message", "alternatives", "retry", "avoid_route_seconds", "alert_operator", "suppressed", "rule", "explanation", "attempt", "policy_version")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_USER_FIELD_NUMBER: _ClassVar[int]
    USER_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ALTERNATIVES_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    AVOID_ROUTE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ALERT_OPERATOR_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    action: Action
    notify_user: bool
    user_message: str
    alternatives: _containers.RepeatedScalarFieldContainer[Alternative]
    retry: RetryPlan
    avoid_route_seconds: int
    alert_operator: bool
    suppressed: bool
    rule: str
    explanation: str
    attempt: int
    policy_version: str
    def __init__(self, action: _Optional[_Union[Action, str]] = ..., notify_user: bool = ..., user_message: _Optional[str] = ..., alternatives: _Optional[_Iterable[_Union[Alternative, str]]] = ..., retry: _Optional[_Union[RetryPlan, _Mapping]] = ..., avoid_route_seconds: _Optional[int] = ..., alert_operator: bool = ..., suppressed: bool = ..., rule: _Optional[str] = ..., explanation: _Optional[str] = ..., attempt: _Optional[int] = ..., policy_version: _Optional[str] = ...) -> None: ...

class ReportOutcomeRequest(_message.Message):
    __slots__ = ("outcome", "tenant")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    outcome: CallOutcome
    tenant: str
    def __init__(self, outcome: _Optional[_Union[CallOutcome, _Mapping]] = ..., tenant: _Optional[str] = ...) -> None: ...

class ReportOutcomeResponse(_message.Message):
    __slots__ = ("classification", "decision", "event_id", "duplicate", "destination")
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    classification: Classification
    decision: Decision
    event_id: str
    duplicate: bool
    destination: str
    def __init__(self, classification: _Optional[_Union[Classification, _Mapping]] = ..., decision: _Optional[_Union[Decision, _Mapping]] = ..., event_id: _Optional[str] = ..., duplicate: bool = ..., destination: _Optional[str] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("outcome", "tenant")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    outcome: CallOutcome
    tenant: str
    def __init__(self, outcome: _Optional[_Union[CallOutcome, _Mapping]] = ..., tenant: _Optional[str] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("classification", "decision")
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    classification: Classification
    decision: Decision
    def __init__(self, classification: _Optional[_Union[Classification, _Mapping]] = ..., decision: _Optional[_Union[Decision, _Mapping]] = ...) -> None: ...

class SubscribeOutcomesRequest(_message.Message):
    __slots__ = ("tenant", "categories", "sip_codes", "destinations", "labels", "start", "resume_token")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    SIP_CODES_FIELD_NUMBER: _ClassVar[int]
    DESTINATIONS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    categories: _containers.RepeatedScalarFieldContainer[Category]
    sip_codes: _containers.RepeatedScalarFieldContainer[int]
    destinations: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.ScalarMap[str, str]
    start: StartPosition
    resume_token: str
    def __init__(self, tenant: _Optional[str] = ..., categories: _Optional[_Iterable[_Union[Category, str]]] = ..., sip_codes: _Optional[_Iterable[int]] = ..., destinations: _Optional[_Iterable[str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., start: _Optional[_Union[StartPosition, str]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class SubscribeOutcomesResponse(_message.Message):
    __slots__ = ("event", "heartbeat", "gap")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    GAP_FIELD_NUMBER: _ClassVar[int]
    event: OutcomeEvent
    heartbeat: Heartbeat
    gap: Gap
    def __init__(self, event: _Optional[_Union[OutcomeEvent, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., gap: _Optional[_Union[Gap, _Mapping]] = ...) -> None: ...

class OutcomeEvent(_message.Message):
    __slots__ = ("event_id", "sequence", "resume_token", "tenant", "outcome", "classification", "decision", "recorded_at", "destination")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    sequence: int
    resume_token: str
    tenant: str
    outcome: CallOutcome
    classification: Classification
    decision: Decision
    recorded_at: _timestamp_pb2.Timestamp
    destination: str
    def __init__(self, event_id: _Optional[str] = ..., sequence: _Optional[int] = ..., resume_token: _Optional[str] = ..., tenant: _Optional[str] = ..., outcome: _Optional[_Union[CallOutcome, _Mapping]] = ..., classification: _Optional[_Union[Classification, _Mapping]] = ..., decision: _Optional[_Union[Decision, _Mapping]] = ..., recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., destination: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("resume_token", "sent_at")
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    resume_token: str
    sent_at: _timestamp_pb2.Timestamp
    def __init__(self, resume_token: _Optional[str] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Gap(_message.Message):
    __slots__ = ("first_sequence", "last_sequence", "reason", "resume_token", "reason_code")
    FIRST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    first_sequence: int
    last_sequence: int
    reason: str
    resume_token: str
    reason_code: GapReason
    def __init__(self, first_sequence: _Optional[int] = ..., last_sequence: _Optional[int] = ..., reason: _Optional[str] = ..., resume_token: _Optional[str] = ..., reason_code: _Optional[_Union[GapReason, str]] = ...) -> None: ...
