"""The synthesised ControlPlaneStack, asserted with aws_cdk.assertions.

One stack is synthesised for the whole module (jsii start-up is the slow part):
the context of ``infra_cdk/cdk.json`` plus a rules file with a named-bucket
rule that propagates deletes, a whole-bucket rule to S3, and a tag-selector
rule. Bundling is skipped with the standard ``aws:cdk:bundling-stacks=[]``
context, so synthesis needs no network and no pip.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from aws_cdk import assertions  # noqa: E402

from infra_cdk.app import build_app  # noqa: E402
from infra_cdk.permissions import (  # noqa: E402
    CONTROL_QUEUE_ACTIONS,
    CONTROL_QUEUE_GATEWAY_ACTIONS,
    EC2_MUTATIONS,
    UNCONDITIONED_EC2,
)
from infra_cdk.settings import SettingsError, settings_from_context  # noqa: E402
from skyhop.models import ReplicationConfig  # noqa: E402
from skyhop.queues.base import CONTROL_QUEUE_PREFIX, control_queue_name  # noqa: E402
from skyhop.state import dynamodb as manifest_schema  # noqa: E402

CDK_JSON = Path(__file__).resolve().parents[1] / "infra_cdk" / "cdk.json"

RULES = """\
version: 1
rules:
  - name: logs-to-gcs
    source_bucket: acme-logs
    prefix: app/
    destination: gs://acme-archive/logs/
    propagate_deletes: true
  - name: raw-to-dr
    source_bucket: acme-raw
    destination: s3://acme-dr/raw/
  - name: tagged-datasets
    bucket_tag: skyhop-replicate=eu
    prefix: datasets/
    destination: s3://acme-eu-replica/datasets/
    propagate_deletes: true
"""

ENV_NAMES = {
    "SKYHOP_TABLE",
    "SKYHOP_IDEMPOTENCY_TABLE",
    "SKYHOP_REQUESTS_QUEUE_URL",
    "SKYHOP_EVENTS_QUEUE_URL",
    "SKYHOP_BUCKET_EVENTS_QUEUE_URL",
    "SKYHOP_RESULTS_QUEUE_URL",
    "SKYHOP_KMS_KEY_ID",
    "SKYHOP_LAUNCH_TEMPLATE_ID",
    "SKYHOP_LAUNCH_TEMPLATE_NAME",
    "SKYHOP_GATEWAY_INSTANCE_PROFILE_ARN",
    "SKYHOP_GATEWAY_ROLE_ARN",
    "SKYHOP_REGIONS",
    "SKYHOP_HOME",
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
}
HANDLERS = {
    "functions.aws.submit.handler",
    "functions.aws.gateway_events.handler",
    "functions.aws.bucket_events.handler",
    "functions.aws.reaper.handler",
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, assertions.Template, dict]:
    work = tmp_path_factory.mktemp("cdk")
    rules = work / "rules.yaml"
    rules.write_text(RULES)
    context = json.loads(CDK_JSON.read_text())["context"]
    context.update(
        {
            "rulesFile": str(rules),
            "transferBuckets": "adhoc-in,adhoc-out",
            "gatewayRegions": ["us-west-2", "eu-west-1"],
            "alarmEmail": "ops@example.com",
            "aws:cdk:bundling-stacks": [],
        }
    )
    _, stack = build_app(context, outdir=str(work / "cdk.out"))
    template = assertions.Template.from_stack(stack)
    return stack, template, template.to_json()


@pytest.fixture(scope="module")
def template(synth: tuple[Any, assertions.Template, dict]) -> assertions.Template:
    return synth[1]


@pytest.fixture(scope="module")
def resources(synth: tuple[Any, assertions.Template, dict]) -> dict[str, dict]:
    return synth[2]["Resources"]


def of_type(resources: dict[str, dict], kind: str) -> dict[str, dict]:
    return {k: v for k, v in resources.items() if v["Type"] == kind}


def skyhop_functions(resources: dict[str, dict]) -> dict[str, dict]:
    return {
        k: v
        for k, v in of_type(resources, "AWS::Lambda::Function").items()
        if v["Properties"].get("Handler", "").startswith("functions.aws.")
    }


def ref_id(value: Any) -> str:
    """The logical id behind a Ref or Fn::GetAtt."""
    if "Ref" in value:
        return value["Ref"]
    return value["Fn::GetAtt"][0]


def statements(resources: dict[str, dict]) -> list[tuple[str, dict]]:
    """Every statement of every identity policy in the template (IAM policies and inline ones)."""
    out = []
    for key, res in resources.items():
        props = res.get("Properties", {})
        if res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            out += [(key, s) for s in props["PolicyDocument"]["Statement"]]
        if res["Type"] == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                out += [(key, s) for s in policy["PolicyDocument"]["Statement"]]
    return out


def role_statements(resources: dict[str, dict], role_id: str) -> list[dict]:
    """Every statement attached to one role (its default policy and any overflow policy)."""
    out = []
    policies = {
        **of_type(resources, "AWS::IAM::Policy"),
        **of_type(resources, "AWS::IAM::ManagedPolicy"),
    }
    for res in policies.values():
        if {"Ref": role_id} in res["Properties"].get("Roles", []):
            out += res["Properties"]["PolicyDocument"]["Statement"]
    return out


def function_role(resources: dict[str, dict], handler: str) -> str:
    for fn in skyhop_functions(resources).values():
        if fn["Properties"]["Handler"] == handler:
            return ref_id(fn["Properties"]["Role"])
    raise AssertionError(f"no function with handler {handler}")


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def arn_text(value: Any) -> str:
    """An ARN with its CloudFormation pseudo-parameters rendered as text."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        return "".join(arn_text(v) for v in value["Fn::Join"][1])
    if "Ref" in value:
        return "${" + value["Ref"] + "}"
    return "${" + ".".join(value["Fn::GetAtt"]) + "}"


# ---------------------------------------------------------------- counts and wiring


def test_resource_counts(template: assertions.Template) -> None:
    template.resource_count_is("AWS::SQS::Queue", 8)  # 4 queues + 4 dead-letter queues
    template.resource_count_is("AWS::CloudWatch::Alarm", 4)
    template.resource_count_is("AWS::DynamoDB::GlobalTable", 2)
    template.resource_count_is("AWS::KMS::Key", 1)
    template.resource_count_is("AWS::Lambda::EventSourceMapping", 3)
    template.resource_count_is("AWS::Lambda::LayerVersion", 1)  # dependencies; Powertools is public
    template.resource_count_is("AWS::EC2::LaunchTemplate", 1)
    template.resource_count_is("AWS::IAM::InstanceProfile", 1)
    template.resource_count_is("AWS::Events::Rule", 4)  # 3 replication rules + the reaper
    template.resource_count_is("Custom::S3BucketNotifications", 2)  # the two named buckets
    template.resource_count_is("AWS::SNS::Subscription", 1)
    template.resource_count_is("AWS::SSM::Parameter", 0)  # public parameters are read, not made


def test_four_functions_with_handlers_runtime_layers(resources: dict[str, dict]) -> None:
    fns = skyhop_functions(resources)
    assert {f["Properties"]["Handler"] for f in fns.values()} == HANDLERS
    codes = {json.dumps(f["Properties"]["Code"], sort_keys=True) for f in fns.values()}
    assert len(codes) == 1, "all four functions share one source asset"
    for fn in fns.values():
        props = fn["Properties"]
        assert props["Runtime"] == "python3.12"
        assert props["Architectures"] == ["arm64"]
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert len(props["Layers"]) == 2
        assert ENV_NAMES <= set(props["Environment"]["Variables"])
        env = props["Environment"]["Variables"]
        assert env["POWERTOOLS_SERVICE_NAME"] == "skyhop"
        assert env["SKYHOP_REGIONS"] == "us-west-2,eu-west-1"
        assert env["SKYHOP_HOME"].startswith("/tmp/"), "only /tmp is writable in Lambda"


def test_layers_are_powertools_and_the_dependencies(synth: tuple, resources: dict) -> None:
    parameters = synth[2]["Parameters"]
    for fn in skyhop_functions(resources).values():
        powertools, deps = fn["Properties"]["Layers"]
        assert (
            parameters[powertools["Ref"]]["Default"]
            == "/aws/service/powertools/python/arm64/python3.12/latest"
        )
        layer = resources[deps["Ref"]]["Properties"]
        assert layer["CompatibleArchitectures"] == ["arm64"]
        assert layer["CompatibleRuntimes"] == ["python3.12"]


def test_environment_points_at_the_stack_resources(resources: dict[str, dict]) -> None:
    queues = of_type(resources, "AWS::SQS::Queue")
    tables = of_type(resources, "AWS::DynamoDB::GlobalTable")
    for fn in skyhop_functions(resources).values():
        env = fn["Properties"]["Environment"]["Variables"]
        for name in (
            "SKYHOP_REQUESTS_QUEUE_URL",
            "SKYHOP_EVENTS_QUEUE_URL",
            "SKYHOP_BUCKET_EVENTS_QUEUE_URL",
            "SKYHOP_RESULTS_QUEUE_URL",
        ):
            assert ref_id(env[name]) in queues
        assert ref_id(env["SKYHOP_TABLE"]) in tables
        assert ref_id(env["SKYHOP_IDEMPOTENCY_TABLE"]) in tables
        assert ref_id(env["SKYHOP_TABLE"]) != ref_id(env["SKYHOP_IDEMPOTENCY_TABLE"])
        assert resources[ref_id(env["SKYHOP_KMS_KEY_ID"])]["Type"] == "AWS::KMS::Key"
        assert (
            resources[ref_id(env["SKYHOP_LAUNCH_TEMPLATE_ID"])]["Type"]
            == "AWS::EC2::LaunchTemplate"
        )
        assert (
            resources[ref_id(env["SKYHOP_GATEWAY_INSTANCE_PROFILE_ARN"])]["Type"]
            == "AWS::IAM::InstanceProfile"
        )


def test_bucket_events_function_reads_the_validated_rules(resources: dict[str, dict]) -> None:
    by_handler = {f["Properties"]["Handler"]: f for f in skyhop_functions(resources).values()}
    env = by_handler["functions.aws.bucket_events.handler"]["Properties"]["Environment"]
    config = ReplicationConfig.model_validate_json(env["Variables"]["SKYHOP_RULES"])
    assert [r.name for r in config.rules] == ["logs-to-gcs", "raw-to-dr", "tagged-datasets"]
    assert config.rules[0].propagate_deletes and config.rules[0].prefix == "app/"
    others = [h for h in by_handler if h != "functions.aws.bucket_events.handler"]
    for handler in others:
        assert "SKYHOP_RULES" not in by_handler[handler]["Properties"]["Environment"]["Variables"]


def test_every_sqs_trigger_reports_batch_item_failures(resources: dict[str, dict]) -> None:
    mappings = of_type(resources, "AWS::Lambda::EventSourceMapping")
    fns = skyhop_functions(resources)
    wired = {}
    for mapping in mappings.values():
        props = mapping["Properties"]
        assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        queue = ref_id(props["EventSourceArn"])
        assert resources[queue]["Type"] == "AWS::SQS::Queue"
        wired[fns[ref_id(props["FunctionName"])]["Properties"]["Handler"]] = queue
    assert set(wired) == HANDLERS - {"functions.aws.reaper.handler"}
    assert len(set(wired.values())) == 3, "each consumer has its own queue"


def test_every_queue_has_a_dead_letter_queue_with_an_alarm(resources: dict[str, dict]) -> None:
    queues = of_type(resources, "AWS::SQS::Queue")
    dlqs = {
        ref_id(q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"])
        for q in queues.values()
        if "RedrivePolicy" in q["Properties"]
    }
    work = set(queues) - dlqs
    assert len(work) == 4 and len(dlqs) == 4
    for key in work:
        assert queues[key]["Properties"]["RedrivePolicy"]["maxReceiveCount"] >= 1
    alarmed = set()
    for alarm in of_type(resources, "AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        assert props["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert props["Threshold"] == 1 and props["AlarmActions"]
        alarmed.add(ref_id(props["Dimensions"][0]["Value"]))
    assert alarmed == dlqs


def test_queue_visibility_covers_the_consumers_timeout(resources: dict[str, dict]) -> None:
    fns = skyhop_functions(resources)
    for mapping in of_type(resources, "AWS::Lambda::EventSourceMapping").values():
        props = mapping["Properties"]
        queue = resources[ref_id(props["EventSourceArn"])]["Properties"]
        timeout = fns[ref_id(props["FunctionName"])]["Properties"]["Timeout"]
        assert queue["VisibilityTimeout"] >= 6 * timeout


def test_reaper_runs_on_a_schedule(template: assertions.Template, resources: dict) -> None:
    reaper = next(
        k
        for k, f in skyhop_functions(resources).items()
        if f["Properties"]["Handler"] == "functions.aws.reaper.handler"
    )
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": "rate(5 minutes)",
            "Targets": [assertions.Match.object_like({"Arn": {"Fn::GetAtt": [reaper, "Arn"]}})],
        },
    )
    template.has_resource_properties(
        "AWS::Lambda::Permission",
        {"FunctionName": {"Fn::GetAtt": [reaper, "Arn"]}, "Principal": "events.amazonaws.com"},
    )


# ---------------------------------------------------------------- tables and key


def test_manifest_table_pitr_ttl_encryption(template: assertions.Template) -> None:
    """The table skyhop.state.dynamodb expects: its keys, indexes and TTL attribute."""
    m = manifest_schema
    assert {g.name for g in m.GLOBAL_SECONDARY_INDEXES} == {m.GSI_BY_STATE, m.GSI_BY_PARENT}
    template.has_resource_properties(
        "AWS::DynamoDB::GlobalTable",
        {
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": [
                {"AttributeName": m.PARTITION_KEY, "KeyType": "HASH"},
                {"AttributeName": m.SORT_KEY, "KeyType": "RANGE"},
            ],
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": gsi.name,
                    "KeySchema": [
                        {"AttributeName": gsi.partition_key, "KeyType": "HASH"},
                        {"AttributeName": gsi.sort_key, "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": gsi.projection},
                }
                for gsi in m.GLOBAL_SECONDARY_INDEXES
            ],
            "TimeToLiveSpecification": {"AttributeName": m.TTL_ATTRIBUTE, "Enabled": True},
            "SSESpecification": {"SSEEnabled": True, "SSEType": "KMS"},
            "Replicas": [
                assertions.Match.object_like(
                    {"PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True}}
                )
            ],
        },
    )


def test_idempotency_table(template: assertions.Template) -> None:
    template.has_resource_properties(
        "AWS::DynamoDB::GlobalTable",
        {
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
            "TimeToLiveSpecification": {"AttributeName": "expiration", "Enabled": True},
        },
    )


def test_manifest_table_and_key_are_retained(resources: dict[str, dict]) -> None:
    manifest = next(
        r
        for r in of_type(resources, "AWS::DynamoDB::GlobalTable").values()
        if len(r["Properties"]["KeySchema"]) == 2
    )
    assert manifest["DeletionPolicy"] == "Retain"
    key = next(iter(of_type(resources, "AWS::KMS::Key").values()))
    assert key["DeletionPolicy"] == "Retain"
    assert key["Properties"]["EnableKeyRotation"] is True


# ---------------------------------------------------------------- IAM


def test_no_identity_policy_grants_wildcard_actions(resources: dict[str, dict]) -> None:
    found = statements(resources)
    assert len(found) > 30
    for key, statement in found:
        for action in as_list(statement["Action"]):
            assert "*" not in action, f"{key} grants {action}"
        assert "NotAction" not in statement, key


def test_resource_policies_allow_no_wildcard_actions_except_key_delegation(
    resources: dict[str, dict],
) -> None:
    """Queue policies only deny plain HTTP (``sqs:*`` Deny) and allow named actions; the
    key policy keeps the standard delegation of the key to the account's IAM."""
    for key, res in resources.items():
        props = res.get("Properties", {})
        doc = props.get("PolicyDocument") if res["Type"].endswith("QueuePolicy") else None
        doc = doc or (props.get("KeyPolicy") if res["Type"] == "AWS::KMS::Key" else None)
        if not doc:
            continue
        for statement in doc["Statement"]:
            wild = [a for a in as_list(statement["Action"]) if "*" in a]
            if not wild or statement["Effect"] == "Deny":
                continue
            assert res["Type"] == "AWS::KMS::Key", f"{key} allows {wild}"
            root = arn_text(statement["Principal"]["AWS"])
            assert root.endswith(":root"), f"{key} allows {wild} to {root}"


def test_ec2_mutations_are_tag_conditioned(resources: dict[str, dict]) -> None:
    checked = set()
    for key, statement in statements(resources):
        actions = as_list(statement["Action"])
        unknown = [a for a in actions if a.startswith("ec2:") and not a.startswith("ec2:Describe")]
        assert set(unknown) <= EC2_MUTATIONS, f"{key}: {unknown} not reviewed"
        mutations = [a for a in actions if a in EC2_MUTATIONS]
        if not mutations:
            continue
        checked.update(mutations)
        assert statement["Resource"] != "*", key
        condition = json.dumps(statement.get("Condition", {}))
        if "aws:RequestTag/skyhop" in condition or "aws:ResourceTag/skyhop" in condition:
            continue
        # Only the pairs EC2 cannot condition by tag (see UNCONDITIONED_EC2's comment).
        for action in mutations:
            allowed = UNCONDITIONED_EC2.get(action, ())
            for resource in as_list(statement["Resource"]):
                text = arn_text(resource)
                assert any(f":{kind}" in text for kind in allowed), f"{key}: {action} {text}"
    assert checked == EC2_MUTATIONS, "every reviewed mutation is granted to someone"


def test_network_and_gateways_must_be_created_tagged(resources: dict[str, dict]) -> None:
    submit = role_statements(resources, function_role(resources, "functions.aws.submit.handler"))
    creates = {
        a
        for s in submit
        if "aws:RequestTag/skyhop" in json.dumps(s.get("Condition", {}))
        for a in as_list(s["Action"])
    }
    assert {
        "ec2:RunInstances",
        "ec2:CreateVpc",
        "ec2:CreateSubnet",
        "ec2:CreateInternetGateway",
        "ec2:CreateSecurityGroup",
        "ec2:CreateTags",
        "ec2:AuthorizeSecurityGroupIngress",
    } <= creates
    tag_on_create = next(s for s in submit if s.get("Sid") == "Ec2TagOnCreate")
    assert "RunInstances" in tag_on_create["Condition"]["StringEquals"]["ec2:CreateAction"]


def test_functions_get_only_what_they_use(resources: dict[str, dict]) -> None:
    def actions(handler: str) -> set[str]:
        found = role_statements(resources, function_role(resources, handler))
        return {a for s in found for a in as_list(s["Action"])}

    submit = actions("functions.aws.submit.handler")
    events = actions("functions.aws.gateway_events.handler")
    bucket = actions("functions.aws.bucket_events.handler")
    reaper = actions("functions.aws.reaper.handler")
    launch = {"ec2:RunInstances", "iam:PassRole", "kms:GenerateDataKey", "kms:CreateGrant"}
    assert launch <= submit and launch <= reaper, "submit starts jobs, the reaper resumes them"
    assert not launch & (events | bucket)
    assert "ec2:CreateVpc" not in events | bucket
    assert "ec2:TerminateInstances" in events & reaper & submit
    assert "ec2:RevokeSecurityGroupIngress" in events & reaper
    assert not any(a.startswith("ec2:") for a in bucket)
    assert {"kms:ListGrants", "kms:RevokeGrant"} <= events & reaper
    assert not any(a.startswith("kms:") for a in bucket)
    everyone = submit | events | bucket | reaper
    assert "kms:Decrypt" not in everyone, "only a job's destination gateways unwrap its key"
    assert "dynamodb:Scan" not in everyone
    assert "s3:DeleteObject" in bucket
    assert "s3:DeleteObject" not in submit | events | reaper
    assert "sqs:ReceiveMessage" not in reaper
    # Every function writes only its own log group.
    for handler in HANDLERS:
        logs = [
            s
            for s in role_statements(resources, function_role(resources, handler))
            if "logs:PutLogEvents" in as_list(s["Action"])
        ]
        assert len(logs) == 1
        assert resources[ref_id(logs[0]["Resource"][0])]["Type"] == "AWS::Logs::LogGroup"


def test_pass_role_only_for_the_gateway_role_to_ec2(resources: dict[str, dict]) -> None:
    passes = [s for _, s in statements(resources) if "iam:PassRole" in as_list(s["Action"])]
    assert passes
    for statement in passes:
        role = ref_id(statement["Resource"])
        assert resources[role]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0][
            "Principal"
        ] == {"Service": "ec2.amazonaws.com"}
        assert statement["Condition"] == {
            "StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}
        }


def test_replication_grants_follow_the_rules(resources: dict[str, dict]) -> None:
    found = role_statements(
        resources, function_role(resources, "functions.aws.bucket_events.handler")
    )
    by_sid = {s.get("Sid"): s for s in found}
    sources = {arn_text(r) for r in as_list(by_sid["ReplicationSourceObjects"]["Resource"])}
    assert sources == {
        "arn:${AWS::Partition}:s3:::acme-logs/app/*",
        "arn:${AWS::Partition}:s3:::acme-raw/*",
    }
    writes = {arn_text(r) for r in as_list(by_sid["ReplicationDestinationObjects"]["Resource"])}
    assert writes == {
        "arn:${AWS::Partition}:s3:::acme-dr/raw/*",
        "arn:${AWS::Partition}:s3:::acme-eu-replica/datasets/*",
    }
    deletes = {arn_text(r) for r in as_list(by_sid["ReplicationDestinationDeletes"]["Resource"])}
    assert deletes == {"arn:${AWS::Partition}:s3:::acme-eu-replica/datasets/*"}
    tagged = by_sid["ReplicationTaggedSourceBuckets"]
    assert "s3:GetBucketTagging" in tagged["Action"]
    assert tagged["Condition"] == {
        "StringEquals": {"s3:ResourceAccount": {"Ref": "AWS::AccountId"}}
    }


def test_data_key_grants_only_decrypt_to_the_gateway_role_per_job(
    resources: dict[str, dict],
) -> None:
    profile = next(iter(of_type(resources, "AWS::IAM::InstanceProfile").values()))
    gateway_role = ref_id(profile["Properties"]["Roles"][0])
    submit = role_statements(resources, function_role(resources, "functions.aws.submit.handler"))
    grant = next(s for s in submit if "kms:CreateGrant" in as_list(s["Action"]))
    assert grant["Condition"] == {
        "StringEquals": {
            "kms:GranteePrincipal": {"Fn::GetAtt": [gateway_role, "Arn"]},
            "kms:GrantConstraintType": "EncryptionContextEquals",
        },
        "ForAllValues:StringEquals": {"kms:GrantOperations": ["Decrypt"]},
    }
    wrap = next(s for s in submit if "kms:GenerateDataKey" in as_list(s["Action"]))
    assert wrap["Condition"] == {"Null": {"kms:EncryptionContext:skyhop:job": "false"}}
    key = next(iter(of_type(resources, "AWS::KMS::Key")))
    for statement in submit:
        if any(a.startswith("kms:") for a in as_list(statement["Action"])):
            assert statement["Resource"] == {"Fn::GetAtt": [key, "Arn"]}


def test_gateway_role(resources: dict[str, dict]) -> None:
    profile = next(iter(of_type(resources, "AWS::IAM::InstanceProfile").values()))
    role = ref_id(profile["Properties"]["Roles"][0])
    actions = {a for s in role_statements(resources, role) for a in as_list(s["Action"])}
    assert {"sqs:SendMessage", "s3:GetObject", "s3:PutObject"} <= actions
    assert not any(a.startswith(("ec2:", "dynamodb:", "iam:", "kms:")) for a in actions)
    buckets = {
        arn_text(r)
        for s in role_statements(resources, role)
        if s.get("Sid") == "TransferDataBuckets"
        for r in as_list(s["Resource"])
    }
    assert buckets == {
        f"arn:${{AWS::Partition}}:s3:::{b}"
        for b in ("acme-dr", "acme-eu-replica", "acme-logs", "acme-raw", "adhoc-in", "adhoc-out")
    }


# ---------------------------------------------------------------- control queues

CONTROL_QUEUE_USERS = {
    "functions.aws.submit.handler",
    "functions.aws.gateway_events.handler",
    "functions.aws.reaper.handler",
}
# The stack is the default ``Skyhop``: its prefix is skyhop's own default.
CONTROL_ARN = (
    f"arn:${{AWS::Partition}}:sqs:${{AWS::Region}}:${{AWS::AccountId}}:{CONTROL_QUEUE_PREFIX}-*"
)


def control_statements(resources: dict[str, dict], role: str) -> list[dict]:
    return [
        s
        for s in role_statements(resources, role)
        if any(arn_text(r) == CONTROL_ARN for r in as_list(s["Resource"]))
    ]


def test_functions_that_start_and_end_jobs_name_the_control_queues(
    resources: dict[str, dict],
) -> None:
    for fn in skyhop_functions(resources).values():
        env = fn["Properties"]["Environment"]["Variables"]
        if fn["Properties"]["Handler"] in CONTROL_QUEUE_USERS:
            assert env["SKYHOP_CONTROL_QUEUES"] == f"sqs://{CONTROL_QUEUE_PREFIX}"
        else:
            assert "SKYHOP_CONTROL_QUEUES" not in env


def test_functions_manage_only_the_control_queues_under_the_prefix(
    resources: dict[str, dict],
) -> None:
    for handler in HANDLERS:
        role = function_role(resources, handler)
        granted = control_statements(resources, role)
        lists = [
            s for s in role_statements(resources, role) if "sqs:ListQueues" in as_list(s["Action"])
        ]
        if handler not in CONTROL_QUEUE_USERS:
            assert not granted and not lists, handler
            continue
        actions = {a for s in granted for a in as_list(s["Action"])}
        assert actions == set(CONTROL_QUEUE_ACTIONS), handler
        assert {"sqs:CreateQueue", "sqs:DeleteQueue", "sqs:TagQueue"} <= actions
        for statement in granted:
            assert as_list(statement["Resource"]) != ["*"]
            assert "sqs:ListQueues" not in as_list(statement["Action"])
        # ListQueues supports no resource-level permission: alone on "*", nothing else there.
        assert len(lists) == 1 and as_list(lists[0]["Action"]) == ["sqs:ListQueues"], handler
        assert lists[0]["Resource"] == "*"
    # Nothing else may create or delete queues.
    for key, statement in statements(resources):
        actions = set(as_list(statement["Action"]))
        if actions & {"sqs:CreateQueue", "sqs:DeleteQueue", "sqs:TagQueue"}:
            assert [arn_text(r) for r in as_list(statement["Resource"])] == [CONTROL_ARN], key


def test_gateway_role_takes_orders_from_its_control_queue(resources: dict[str, dict]) -> None:
    profile = next(iter(of_type(resources, "AWS::IAM::InstanceProfile").values()))
    role = ref_id(profile["Properties"]["Roles"][0])
    granted = control_statements(resources, role)
    actions = {a for s in granted for a in as_list(s["Action"])}
    assert actions == set(CONTROL_QUEUE_GATEWAY_ACTIONS)
    everything = {a for s in role_statements(resources, role) for a in as_list(s["Action"])}
    assert not everything & {"sqs:CreateQueue", "sqs:DeleteQueue", "sqs:ListQueues"}
    sends = [
        s for s in role_statements(resources, role) if "sqs:SendMessage" in as_list(s["Action"])
    ]
    assert len(sends) == 1, "the gateway posts only to the events queue"
    (target,) = as_list(sends[0]["Resource"])
    env = next(iter(skyhop_functions(resources).values()))["Properties"]["Environment"]
    assert ref_id(target) == ref_id(env["Variables"]["SKYHOP_EVENTS_QUEUE_URL"])


def test_control_queue_names_fall_under_the_granted_arn() -> None:
    name = control_queue_name(
        CONTROL_QUEUE_PREFIX, "j-0123456789abcdef", "gw-j-0123456789abcdef-a1-h0-0"
    )
    assert name == f"{CONTROL_QUEUE_PREFIX}-j-0123456789abcdef--a1-h0-0"
    assert name.startswith(CONTROL_ARN.rsplit(":", 1)[1].rstrip("*"))


def test_stack_name_too_long_for_control_queue_names() -> None:
    longest = "S" + "k" * 39
    assert settings_from_context({"stackName": longest}).stack_name == longest
    with pytest.raises(SettingsError, match="stackName: at most 40 characters.*control queues"):
        settings_from_context({"stackName": longest + "x"})
    # the longest prefix still leaves room for the longest gateway part
    name = control_queue_name(f"{longest.lower()}-ctl", "j-0123456789abcdef", "gw-" + "x" * 90)
    assert len(name) <= 80


# ---------------------------------------------------------------- replication wiring


def test_bucket_event_rules_match_configured_buckets_and_prefixes(
    resources: dict[str, dict],
) -> None:
    queue = next(
        k
        for k, f in of_type(resources, "AWS::Lambda::EventSourceMapping").items()
        if skyhop_functions(resources)[ref_id(f["Properties"]["FunctionName"])]["Properties"][
            "Handler"
        ]
        == "functions.aws.bucket_events.handler"
    )
    bucket_queue = ref_id(resources[queue]["Properties"]["EventSourceArn"])
    patterns = {}
    for rule in of_type(resources, "AWS::Events::Rule").values():
        props = rule["Properties"]
        if "EventPattern" not in props:
            continue
        assert [ref_id(t["Arn"]) for t in props["Targets"]] == [bucket_queue]
        patterns[props["Description"].rsplit(" ", 1)[-1]] = props["EventPattern"]
    assert patterns == {
        "logs-to-gcs": {
            "source": ["aws.s3"],
            "detail-type": ["Object Created", "Object Deleted"],
            "detail": {"bucket": {"name": ["acme-logs"]}, "object": {"key": [{"prefix": "app/"}]}},
        },
        "raw-to-dr": {
            "source": ["aws.s3"],
            "detail-type": ["Object Created"],
            "detail": {"bucket": {"name": ["acme-raw"]}},
        },
        "tagged-datasets": {
            "source": ["aws.s3"],
            "detail-type": ["Object Created", "Object Deleted"],
            "detail": {"object": {"key": [{"prefix": "datasets/"}]}},
        },
    }


def test_named_buckets_send_events_to_eventbridge(resources: dict[str, dict]) -> None:
    notes = of_type(resources, "Custom::S3BucketNotifications")
    assert {n["Properties"]["BucketName"] for n in notes.values()} == {"acme-logs", "acme-raw"}
    for note in notes.values():
        assert note["Properties"]["NotificationConfiguration"] == {"EventBridgeConfiguration": {}}
        assert note["Properties"]["Managed"] is False, "existing notifications are kept"


def test_only_eventbridge_rules_may_send_to_the_bucket_events_queue(
    resources: dict[str, dict],
) -> None:
    rules = {
        k
        for k, r in of_type(resources, "AWS::Events::Rule").items()
        if "EventPattern" in r["Properties"]
    }
    allowed = set()
    for policy in of_type(resources, "AWS::SQS::QueuePolicy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Effect"] != "Allow":
                continue
            assert statement["Principal"] == {"Service": "events.amazonaws.com"}
            allowed.add(ref_id(statement["Condition"]["ArnEquals"]["aws:SourceArn"]))
    assert allowed == rules


# ---------------------------------------------------------------- gateway


def test_gateway_launch_template(template: assertions.Template, resources: dict) -> None:
    template.has_resource_properties(
        "AWS::EC2::LaunchTemplate",
        {
            "LaunchTemplateData": assertions.Match.object_like(
                {
                    "InstanceType": "m5.8xlarge",
                    "MetadataOptions": {"HttpPutResponseHopLimit": 1, "HttpTokens": "required"},
                    "InstanceInitiatedShutdownBehavior": "terminate",
                    "BlockDeviceMappings": [
                        assertions.Match.object_like(
                            {"Ebs": assertions.Match.object_like({"Encrypted": True})}
                        )
                    ],
                    "TagSpecifications": assertions.Match.array_with(
                        [
                            {
                                "ResourceType": "instance",
                                "Tags": assertions.Match.array_with(
                                    [{"Key": "skyhop", "Value": "Skyhop"}]
                                ),
                            }
                        ]
                    ),
                }
            )
        },
    )
    lt = next(iter(of_type(resources, "AWS::EC2::LaunchTemplate").values()))
    assert lt["Properties"]["LaunchTemplateName"] == "Skyhop-gateway"
    profile = lt["Properties"]["LaunchTemplateData"]["IamInstanceProfile"]["Arn"]
    assert resources[ref_id(profile)]["Type"] == "AWS::IAM::InstanceProfile"
