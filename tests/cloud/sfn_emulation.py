"""Engine ``stepfunctions`` emulated from the synthesized template on moto's Step Functions
interpreter: the real definition runs for real, its Lambda tasks routed in-process to the
real handlers (the host-side source, not the arm64 bundle).

What is real: the definition (read from the template, its substitutions resolved to the
emulated bucket and functions), moto's interpreter (Task, Retry, Catch, Fail, Distributed
Map with its ``s3:listObjectsV2`` ``ItemReader`` and ``MaxConcurrency``, run in threads),
S3, Secrets Manager, DynamoDB (the budget table of pacing ``shared``), the handlers, the
starter (fed the notification body moto's S3 really sends), and Hermes (the simulator).
Every AWS call a function makes is held against its role from the template, and the
interpreter's own (the listing, the invocations) against the state machine's role.

Where moto differs from AWS (``to_moto``), and what stands in for AWS instead:

- ``ItemBatcher`` is a parse error in moto: it is removed, and the ``ItemSelector``
  wraps each listed object in a batch of one (``{"Items": [object]}``), the shape AWS
  gives a child. The states that size the leaf's batches run as they are
  (``test_sfn_batch_sizing.py`` checks what they choose). Batches of several keys are
  exercised by ``tests/handlers/test_sfn_engine.py``
  (``run_batches``, the model of AWS's batching and the child's retries).
- ``ToleratedFailurePercentage`` is ignored by moto (any failed child fails its Map):
  it is removed, and a child's final ``Fail`` (after its crash was recorded) becomes a
  ``Succeed``, so the run goes on as AWS's would within the tolerance. ``MapRunModel``
  counts each Map Run's children (moto's ``describe_map_run``) and failed children (the
  crash records asked for) and applies AWS's rule: the Map Run fails when the failed
  children exceed the percentage; the scenarios assert against it.
- Retry waits: moto really sleeps them; ``IntervalSeconds`` and ``MaxDelaySeconds`` are
  cut to 1 s (the template's values are asserted in ``tests/infra``).
- Redrive is not implemented by moto.

Invocations are serialized (one lock): a Lambda instance runs one invocation at a time,
and the emulation checks correctness, not speed.
"""

from __future__ import annotations

import copy
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import botocore.client
from botocore.exceptions import ClientError

from fanout_aws.stage_handler import handler_for
from fanout_core.settings import (
    SHARED_MAX_RATE,
    environment_from_json,
    environment_to_json,
    parse_environment,
)
from fanout_core.stages import STAGES
from stacks.constructs.sfn_engine import STARTER_HANDLER

from .emulation import Emulation, FakeContext, ProcessDied
from .wiring import ACCOUNT, REGION, Names, RolePolicy, Wiring, resolve

RETRY_WAIT_S = 1
"""moto sleeps a Retry's waits for real; the emulation cuts them to this."""


def function_arn(logical_id: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{logical_id}"


def machine_of(doc: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    ((logical_id, resource),) = [
        (k, r) for k, r in doc["Resources"].items() if r["Type"] == "AWS::StepFunctions::StateMachine"
    ]
    return logical_id, resource["Properties"]


def to_moto(definition: dict[str, Any]) -> dict[str, Any]:
    """The definition as moto can run it (the module docstring says what and why)."""
    out = copy.deepcopy(definition)

    def walk(states: dict[str, Any]) -> None:
        for state in states.values():
            for retry in state.get("Retry", []):
                retry["IntervalSeconds"] = RETRY_WAIT_S
                retry["MaxDelaySeconds"] = RETRY_WAIT_S
            if state["Type"] == "Map":
                assert set(state.pop("ItemBatcher")) & {"MaxItemsPerBatch", "MaxItemsPerBatchPath"}
                assert state["ItemSelector"] == {"Key.$": "$$.Map.Item.Value.Key"}
                state["ItemSelector"] = {"Items.$": "States.Array($$.Map.Item.Value)"}
                state.pop("ToleratedFailurePercentage")
                children = state["ItemProcessor"]["States"]
                for name, child in list(children.items()):
                    if child["Type"] == "Fail":  # counted by MapRunModel instead
                        children[name] = {"Type": "Succeed", "Comment": f"moto: was Fail {child['Error']}"}
                walk(children)

    walk(out["States"])
    return out


@dataclass
class MapRunModel:
    """AWS's tolerance rule for one Map Run: it fails when its failed children exceed
    ``ToleratedFailurePercentage`` of its children."""

    label: str
    tolerated_percentage: float
    children: int = 0
    failed: int = 0

    @property
    def fails(self) -> bool:
        return self.children > 0 and 100.0 * self.failed / self.children > self.tolerated_percentage


@dataclass
class SfnFigures:
    invocations: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    denied_calls: list[str] = field(default_factory=list)
    checked_calls: dict[str, int] = field(default_factory=dict)
    """Who (a function, ``starter``, ``state machine``) -> calls held against its role."""
    map_runs: dict[str, MapRunModel] = field(default_factory=dict)
    crashed_batches: dict[str, int] = field(default_factory=dict)
    """Map Run label -> batches handed back to record their crash (failed children)."""


class SfnEmulation:
    """The template's state machine, functions and roles on moto (see the module docstring)."""

    def __init__(
        self,
        doc: Mapping[str, Any],
        wiring: Wiring,
        *,
        s3: Any,
        sfn: Any,
        iam: Any,
        awslambda: Any,
        secrets: Any,
        dynamodb: Any,
        bucket: str,
        hermes_url: str,
        token: str,
        crash_keys: frozenset[str] = frozenset(),
    ) -> None:
        self.doc, self.wiring, self.sfn, self.crash_keys = doc, wiring, sfn, crash_keys
        self.figures = SfnFigures()
        self.secret_arns: dict[str, str] = {}
        tables = {
            tid: dynamodb.create_table(
                TableName=tid[:255],
                KeySchema=list(t.key_schema),
                AttributeDefinitions=list(t.attribute_definitions),
                BillingMode=t.billing_mode,
            )["TableDescription"]["TableName"]
            for tid, t in wiring.tables.items()
        }
        self.names = Names(bucket_id=wiring.bucket_id, bucket=bucket, queue_urls={}, table_names=tables)
        self.policies: dict[str, RolePolicy] = wiring.bind(self.names)
        role_arn = iam.create_role(RoleName="emulated", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        self._local = threading.local()
        self._lock = threading.Lock()
        self.handlers: dict[str, tuple[Callable[[Any, Any], Any], dict[str, str], str, int]] = {}
        self.starter: tuple[dict[str, str], str] | None = None
        for fid, spec in wiring.functions.items():
            env = {k: str(resolve(v, self.names)) for k, v in spec.environment.items()}
            if spec.handler == STARTER_HANDLER:
                self.starter = (env, spec.role_id)
                continue
            settings = environment_from_json(env["FANOUT_ENV_NAME"], env["FANOUT_SETTINGS"])
            raw = json.loads(environment_to_json(settings))
            raw.update(
                hermes_url=hermes_url,
                hermes_rate_limit=SHARED_MAX_RATE if settings.pacing == "shared" else 1e6,
            )
            env["FANOUT_SETTINGS"] = environment_to_json(parse_environment(settings.name, raw))
            self.settings = settings
            self.handlers[fid] = (handler_for(env["FANOUT_STAGE"]), env, spec.role_id, spec.timeout_s)
            awslambda.create_function(
                FunctionName=fid,
                Runtime="python3.12",
                Role=role_arn,
                Handler=spec.handler,
                Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18},
            )
            self.figures.invocations[fid] = self.figures.errors[fid] = 0
        name = self.settings.token_secret_name
        self.secret_arns[name] = secrets.create_secret(Name=name, SecretString=token)["ARN"]
        machine_id, props = machine_of(doc)
        self.machine_role = self.policies[props["RoleArn"]["Fn::GetAtt"][0]]
        substitutions = {
            k: (bucket if resolve(v, self.names) == bucket else function_arn(v["Fn::GetAtt"][0]))
            for k, v in props["DefinitionSubstitutions"].items()
        }
        text = props["DefinitionString"]
        for k, v in substitutions.items():
            text = text.replace(f"${{{k}}}", v)
        self.definition = json.loads(text)
        for stage in STAGES:
            state = self.definition["States"][stage.function_id]
            self.figures.map_runs[state["Label"]] = MapRunModel(
                state["Label"], float(state["ToleratedFailurePercentage"])
            )
        self.machine_arn = sfn.create_state_machine(
            name=props["StateMachineName"],
            definition=json.dumps(to_moto(self.definition)),
            roleArn=role_arn,
            type=props["StateMachineType"],
        )["stateMachineArn"]
        del machine_id

    # -- Lambda, routed to the handlers ----------------------------------------------

    def invoke(self, function_name: str, event: Any) -> tuple[str, bool, str]:
        """``LambdaFunction._invoke_lambda``'s answer: (payload JSON, errored, logs)."""
        handler, env, role_id, timeout_s = self.handlers[function_name]
        with self._lock:
            saved = dict(os.environ)
            os.environ.update(env)
            self._local.policy = (function_name, self.policies[role_id])
            self.figures.invocations[function_name] += 1
            batch = event.get("fanout_sfn") if isinstance(event, dict) else None
            if isinstance(batch, dict) and "Crash" in batch:
                label = STAGES.named(env["FANOUT_STAGE"]).function_id
                self.figures.crashed_batches[label] = self.figures.crashed_batches.get(label, 0) + 1
            try:
                result = handler(event, FakeContext(function_name, timeout_s * 1000))
                return json.dumps(result), False, ""
            except BaseException as exc:  # a function error, as Lambda reports it
                self.figures.errors[function_name] += 1
                kind = "Runtime.ExitError" if isinstance(exc, ProcessDied) else type(exc).__name__
                return json.dumps({"errorType": kind, "errorMessage": str(exc)[:500]}), True, ""
            finally:
                self._local.policy = None
                os.environ.clear()
                os.environ.update(saved)

    def start_from(self, notification_body: str) -> Any:
        """The starter, given one S3 notification body, under its role."""
        from fanout_aws.sfn_starter import starter_handler

        assert self.starter is not None
        env, role_id = self.starter
        saved = dict(os.environ)
        os.environ.update(env)
        self._local.policy = ("starter", self.policies[role_id])
        try:
            return starter_handler()(json.loads(notification_body), None)
        finally:
            self._local.policy = None
            os.environ.clear()
            os.environ.update(saved)

    @contextmanager
    def routed(self, monkeypatch: Any) -> Iterator[None]:
        """Lambda tasks to the handlers; every botocore call held against its role (a
        function's while it runs, else the state machine's for the interpreter's S3 and
        Lambda calls); a crash key's read kills the process."""
        from moto.awslambda.models import LambdaFunction

        emulation = self

        def invoke_lambda(function: Any, event: Any = None) -> tuple[str, bool, str]:
            payload = json.loads(event) if isinstance(event, str) else event
            return emulation.invoke(function.function_name, payload)

        monkeypatch.setattr(LambdaFunction, "_invoke_lambda", invoke_lambda)
        original = botocore.client.BaseClient._make_api_call

        def call(client: Any, op: str, params: dict[str, Any]) -> Any:
            current = getattr(emulation._local, "policy", None)
            service = client.meta.service_model.service_name
            if current is not None:
                who, policy = current
            elif service in ("s3", "lambda") and threading.current_thread() is not threading.main_thread():
                who, policy = "state machine", emulation.machine_role
            else:
                return original(client, op, params)
            action, resource, context = emulation._request(service, op, params)
            checked = emulation.figures.checked_calls
            checked[who] = checked.get(who, 0) + 1
            if not policy.allows(action, resource, context):
                emulation.figures.denied_calls.append(f"{who}: {action} {resource} {context or ''}")
                denied = {"Code": "AccessDenied", "Message": "emulated IAM"}
                # the status AWS answers with (moto's aws-sdk task reads it to make the
                # States error a Catch sees)
                meta = {"HTTPStatusCode": 403, "RequestId": "emulated", "HTTPHeaders": {}}
                raise ClientError({"Error": denied, "ResponseMetadata": meta}, op)
            if op == "GetObject" and params.get("Key") in emulation.crash_keys and current is not None:
                raise ProcessDied(params["Key"])
            return original(client, op, params)

        monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", call)
        yield

    def _request(self, service: str, op: str, params: Mapping[str, Any]) -> tuple[str, str, dict[str, str]]:
        if service == "lambda":
            name = str(params.get("FunctionName", ""))
            return "lambda:InvokeFunction", name if name.startswith("arn:") else function_arn(name), {}
        if service == "stepfunctions":
            return f"states:{op}", str(params.get("stateMachineArn", "*")), {}
        return Emulation._request(self, service, op, params)  # type: ignore[arg-type]

    # -- the Map Runs, counted as AWS would ------------------------------------------

    def count_map_runs(self, execution_arn: str) -> None:
        """Each Map Run's children and failures from moto, into ``MapRunModel``."""
        for run in self.sfn.list_map_runs(executionArn=execution_arn)["mapRuns"]:
            described = self.sfn.describe_map_run(mapRunArn=run["mapRunArn"])
            label = run["mapRunArn"].split(":")[-2].split("/")[-1]
            model = self.figures.map_runs.get(label)
            if model is None:
                continue
            model.children = described["executionCounts"]["total"]
        for label, crashed in self.figures.crashed_batches.items():
            if label in self.figures.map_runs:
                self.figures.map_runs[label].failed = crashed
