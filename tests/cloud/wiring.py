"""The deployed wiring, read from a synthesized template: what the emulation runs.

Every number and connection the emulation uses comes from here, never from the
settings: the bucket's notification configuration (prefix -> function or queue), each
function's handler, environment, role and reserved concurrency, its event-invoke
config (retries, event age, on-failure destination), each queue's visibility timeout
and redrive policy, each event source mapping's batch size, maximum concurrency and
response types, each DynamoDB table's key schema (the budget table of pacing
``shared``), and each role's policy statements (``RolePolicy``), against which
every AWS call a handler makes is checked. The dead-letter recorder is one of the
functions (``FunctionSpec.recorder``), with its mappings on the DLQs and its own role.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stacks.constructs.dead_letters import HANDLER as DEAD_LETTER_HANDLER

ACCOUNT = "123456789012"
"""moto's default account: the ARNs moto returns must match what the template grants."""
REGION = "us-east-1"
PARTITION = "aws"
BASIC_EXECUTION = "AWSLambdaBasicExecutionRole"
BASIC_EXECUTION_STATEMENTS = [
    {
        "Effect": "Allow",
        "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": "*",
    }
]


@dataclass(frozen=True)
class Names:
    """Physical names of the template's resources in the emulated account."""

    bucket_id: str
    bucket: str
    queue_urls: Mapping[str, str]
    """Queue logical id -> its moto URL."""
    table_names: Mapping[str, str] = field(default_factory=dict)
    """DynamoDB table logical id -> its moto table name."""

    def queue_arn(self, logical_id: str) -> str:
        return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{self.queue_urls[logical_id].rsplit('/', 1)[-1]}"

    def table_arn(self, logical_id: str) -> str:
        return table_arn(self.table_names[logical_id])


def table_arn(name: str) -> str:
    return f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{name}"


def resolve(value: Any, names: Names) -> Any:
    """A CloudFormation expression as the deployed value (bucket, queues, tables, functions,
    pseudo parameters, joins); raises on anything the emulation does not know, rather than guess."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list):
        return [resolve(v, names) for v in value]
    if isinstance(value, dict) and len(value) == 1:
        ((fn, arg),) = value.items()
        if fn == "Ref":
            pseudo = {"AWS::Partition": PARTITION, "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}
            if arg in pseudo:
                return pseudo[arg]
            if arg == names.bucket_id:
                return names.bucket
            if arg in names.queue_urls:
                return names.queue_urls[arg]
            if arg in names.table_names:
                return names.table_names[arg]
            return arg  # a function's name is its logical id here
        if fn == "Fn::GetAtt":
            target, attr = arg
            if target == names.bucket_id and attr == "Arn":
                return f"arn:aws:s3:::{names.bucket}"
            if target in names.queue_urls and attr == "Arn":
                return names.queue_arn(target)
            if target in names.queue_urls and attr == "QueueName":
                return names.queue_urls[target].rsplit("/", 1)[-1]
            if target in names.table_names and attr == "Arn":
                return names.table_arn(target)
            if attr == "Arn":
                return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{target}"
        if fn == "Fn::Join":
            sep, parts = arg
            return sep.join(str(resolve(p, names)) for p in parts)
    raise ValueError(f"the emulation cannot resolve {value!r}")


# --- IAM ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _pattern(text: str) -> re.Pattern[str]:
    """An IAM wildcard (``*`` any run, ``?`` one character) as a regex."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text), re.S)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@dataclass
class RolePolicy:
    """The Allow statements of one role (inline policies and the basic execution role)."""

    role_id: str
    statements: list[dict[str, Any]] = field(default_factory=list)

    def allows(self, action: str, resource: str, context: Mapping[str, str] | None = None) -> bool:
        for st in self.statements:
            if st.get("Effect") != "Allow":
                continue
            if not any(_pattern(a.lower()).fullmatch(action.lower()) for a in _as_list(st["Action"])):
                continue
            if not any(_pattern(r).fullmatch(resource) for r in _as_list(st["Resource"])):
                continue
            if self._conditions_hold(st.get("Condition", {}), context or {}):
                return True
        return False

    @staticmethod
    def _conditions_hold(conditions: Mapping[str, Any], context: Mapping[str, str]) -> bool:
        for operator, tests in conditions.items():
            for key, wanted in tests.items():
                got = context.get(key)
                if got is None:
                    return False
                if operator == "StringLike":
                    if not any(_pattern(w).fullmatch(got) for w in _as_list(wanted)):
                        return False
                elif operator in ("StringEquals", "ArnEquals"):
                    if got not in _as_list(wanted):
                        return False
                else:
                    return False  # an operator the emulation does not know: deny, loudly
        return True


# --- the wiring --------------------------------------------------------------------


@dataclass(frozen=True)
class AsyncConfig:
    max_retries: int
    max_event_age_s: int
    on_failure_queue: str | None
    """Logical id of the on-failure destination queue."""


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    handler: str
    reserved: int | None
    """Reserved concurrency; None draws on the account's unreserved pool (the recorder)."""
    timeout_s: int
    role_id: str
    environment: Mapping[str, Any]
    """Unresolved: values may be CloudFormation expressions."""
    invoke_config: AsyncConfig | None
    recorder: bool = False
    """The dead-letter recorder (``fanout_aws.handlers.dead_letters``), not a stage."""


@dataclass(frozen=True)
class QueueSpec:
    logical_id: str
    visibility_s: int
    retention_s: int
    dlq: str | None
    max_receives: int | None


@dataclass(frozen=True)
class TableSpec:
    """An ``AWS::DynamoDB::Table`` as the emulation creates it in moto."""

    logical_id: str
    key_schema: tuple[dict[str, str], ...]
    attribute_definitions: tuple[dict[str, str], ...]
    billing_mode: str


@dataclass(frozen=True)
class MappingSpec:
    queue: str
    function: str
    batch_size: int
    max_concurrency: int | None
    report_failures: bool


@dataclass(frozen=True)
class Notification:
    prefix: str
    suffix: str
    function: str | None = None
    queue: str | None = None


@dataclass(frozen=True)
class Wiring:
    bucket_id: str
    functions: Mapping[str, FunctionSpec]
    queues: Mapping[str, QueueSpec]
    mappings: tuple[MappingSpec, ...]
    notifications: tuple[Notification, ...]
    policies: Mapping[str, RolePolicy]
    """Role logical id -> its statements (resolved once names are known, ``bind``)."""
    raw_statements: Mapping[str, tuple[dict[str, Any], ...]]
    s3_invoke_permissions: tuple[tuple[str, Any, Any], ...]
    """(function logical id, SourceArn, SourceAccount) of each S3 ``lambda:InvokeFunction``."""
    queue_policies: Mapping[str, tuple[dict[str, Any], ...]]
    tables: Mapping[str, TableSpec] = field(default_factory=dict)
    """Table logical id -> its spec (the budget table of pacing ``shared``)."""

    def bind(self, names: Names) -> dict[str, RolePolicy]:
        return {
            role: RolePolicy(role, [{**st, "Resource": resolve(st["Resource"], names)} for st in sts])
            for role, sts in self.raw_statements.items()
        }


def _ref(value: Any) -> str:
    if isinstance(value, dict) and "Ref" in value:
        return str(value["Ref"])
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return str(value["Fn::GetAtt"][0])
    raise ValueError(f"not a reference: {value!r}")


def read_wiring(doc: Mapping[str, Any]) -> Wiring:
    resources: Mapping[str, Any] = doc["Resources"]

    def of(cfn_type: str) -> Iterable[tuple[str, Mapping[str, Any]]]:
        return ((k, r.get("Properties", {})) for k, r in resources.items() if r["Type"] == cfn_type)

    (notifications,) = [p for _, p in of("Custom::S3BucketNotifications")]
    bucket_id = _ref(notifications["BucketName"])
    invoke_configs = {_ref(p["FunctionName"]): p for _, p in of("AWS::Lambda::EventInvokeConfig")}
    functions = {}
    for fid, p in of("AWS::Lambda::Function"):
        if not str(p.get("Handler", "")).startswith("fanout_aws."):
            continue  # CDK's own helpers
        ic = invoke_configs.get(fid)
        reserved = p.get("ReservedConcurrentExecutions")
        functions[fid] = FunctionSpec(
            logical_id=fid,
            handler=p["Handler"],
            reserved=None if reserved is None else int(reserved),
            timeout_s=int(p["Timeout"]),
            role_id=_ref(p["Role"]),
            environment=dict(p["Environment"]["Variables"]),
            invoke_config=None
            if ic is None
            else AsyncConfig(
                max_retries=int(ic.get("MaximumRetryAttempts", 2)),
                max_event_age_s=int(ic.get("MaximumEventAgeInSeconds", 21600)),
                on_failure_queue=_ref(ic["DestinationConfig"]["OnFailure"]["Destination"])
                if "DestinationConfig" in ic
                else None,
            ),
            recorder=p["Handler"] == DEAD_LETTER_HANDLER,
        )
    queues = {}
    for qid, p in of("AWS::SQS::Queue"):
        redrive = p.get("RedrivePolicy")
        queues[qid] = QueueSpec(
            logical_id=qid,
            visibility_s=int(p.get("VisibilityTimeout", 30)),
            retention_s=int(p.get("MessageRetentionPeriod", 345600)),
            dlq=_ref(redrive["deadLetterTargetArn"]) if redrive else None,
            max_receives=int(redrive["maxReceiveCount"]) if redrive else None,
        )
    tables = {
        tid: TableSpec(
            logical_id=tid,
            key_schema=tuple(dict(k) for k in p["KeySchema"]),
            attribute_definitions=tuple(dict(a) for a in p["AttributeDefinitions"]),
            billing_mode=str(p.get("BillingMode", "PROVISIONED")),
        )
        for tid, p in of("AWS::DynamoDB::Table")
    }
    mappings = tuple(
        MappingSpec(
            queue=_ref(p["EventSourceArn"]),
            function=_ref(p["FunctionName"]),
            batch_size=int(p.get("BatchSize", 10)),
            max_concurrency=p.get("ScalingConfig", {}).get("MaximumConcurrency"),
            report_failures="ReportBatchItemFailures" in p.get("FunctionResponseTypes", []),
        )
        for _, p in of("AWS::Lambda::EventSourceMapping")
    )
    config = notifications["NotificationConfiguration"]
    found = []
    for kind, arn_key in (
        ("LambdaFunctionConfigurations", "LambdaFunctionArn"),
        ("QueueConfigurations", "QueueArn"),
    ):
        for cfg in config.get(kind, []):
            assert cfg["Events"] == ["s3:ObjectCreated:*"], cfg
            rules = {r["Name"]: r["Value"] for r in cfg["Filter"]["Key"]["FilterRules"]}
            target = _ref(cfg[arn_key])
            found.append(
                Notification(
                    prefix=rules.get("prefix", ""),
                    suffix=rules.get("suffix", ""),
                    function=target if arn_key == "LambdaFunctionArn" else None,
                    queue=target if arn_key == "QueueArn" else None,
                )
            )
    statements: dict[str, list[dict[str, Any]]] = {}
    for _, p in of("AWS::IAM::Policy"):
        for role in p["Roles"]:
            statements.setdefault(_ref(role), []).extend(p["PolicyDocument"]["Statement"])
    for rid, p in of("AWS::IAM::Role"):
        for managed in p.get("ManagedPolicyArns", []):
            if BASIC_EXECUTION in str(managed):
                statements.setdefault(rid, []).extend(BASIC_EXECUTION_STATEMENTS)
    permissions = tuple(
        (_ref(p["FunctionName"]), p.get("SourceArn"), p.get("SourceAccount"))
        for _, p in of("AWS::Lambda::Permission")
        if p.get("Principal") == "s3.amazonaws.com" and p.get("Action") == "lambda:InvokeFunction"
    )
    queue_policies: dict[str, list[dict[str, Any]]] = {}
    for _, p in of("AWS::SQS::QueuePolicy"):
        for q in p["Queues"]:
            queue_policies.setdefault(_ref(q), []).extend(p["PolicyDocument"]["Statement"])
    return Wiring(
        bucket_id=bucket_id,
        functions=functions,
        queues=queues,
        mappings=mappings,
        notifications=tuple(found),
        policies={},
        raw_statements={k: tuple(v) for k, v in statements.items()},
        s3_invoke_permissions=permissions,
        queue_policies={k: tuple(v) for k, v in queue_policies.items()},
        tables=tables,
    )
