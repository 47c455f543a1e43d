"""The synthesised ControlPlaneStack, asserted with aws_cdk.assertions.

The stack is synthesised once for the session (``tests/fixtures/cdk.py``'s
``cdk_default``: ``infra_cdk/cdk.json``'s context plus a rules file with a
named-bucket rule that propagates deletes, a whole-bucket rule to S3, and a
tag-selector rule; ``cdk_sqs`` for the S3 -> SQS shape). Bundling is skipped with
the standard ``aws:cdk:bundling-stacks=[]`` context, so synthesis needs no network
and no pip.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from aws_cdk import assertions

from infra_cdk.permissions import (
    CONTROL_QUEUE_ACTIONS,
    CONTROL_QUEUE_GATEWAY_ACTIONS,
    EC2_MUTATIONS,
    UNCONDITIONED_EC2,
)
from infra_cdk.settings import SettingsError, settings_from_context
from skyhop.models import ReplicationConfig
from skyhop.queues.base import CONTROL_QUEUE_PREFIX, control_queue_name
from skyhop.state import dynamodb as manifest_schema
from tests.fixtures.cdk import Synthesis

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
    "SKYHOP_GATEWAY_SOURCE_PROFILE_ARN",
    "SKYHOP_GATEWAY_RELAY_PROFILE_ARN",
    "SKYHOP_GATEWAY_DESTINATION_PROFILE_ARN",
    "SKYHOP_GATEWAY_DESTINATION_ROLE_ARN",
    "SKYHOP_GATEWAY_WHEEL",
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
def synth(cdk_default: Synthesis) -> tuple[Any, assertions.Template, dict]:
    return cdk_default.stack, cdk_default.template, cdk_default.json


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
    if "Fn::Sub" in value:  # an asset bucket's name
        return str(value["Fn::Sub"])
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
    template.resource_count_is("AWS::IAM::InstanceProfile", 3)  # source, relay, destination
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
        assert set(props["Environment"]["Variables"]) >= ENV_NAMES
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
        profiles = {
            ref_id(env[f"SKYHOP_GATEWAY_{role.upper()}_PROFILE_ARN"]) for role in GATEWAY_ROLES
        }
        assert len(profiles) == 3  # one identity per gateway role
        assert {resources[p]["Type"] for p in profiles} == {"AWS::IAM::InstanceProfile"}
        destination = ref_id(env["SKYHOP_GATEWAY_DESTINATION_ROLE_ARN"])
        assert destination == gateway_role(resources, "destination")


def test_bucket_events_function_reads_the_validated_rules(resources: dict[str, dict]) -> None:
    """The rules drive replication (bucket_events) and what requests are admitted
    (submit, with the transfer buckets: controlplane.admission); nothing else reads them."""
    by_handler = {f["Properties"]["Handler"]: f for f in skyhop_functions(resources).values()}
    readers = ["functions.aws.bucket_events.handler", "functions.aws.submit.handler"]
    for handler in readers:
        env = by_handler[handler]["Properties"]["Environment"]
        config = ReplicationConfig.model_validate_json(env["Variables"]["SKYHOP_RULES"])
        assert [r.name for r in config.rules] == ["logs-to-gcs", "raw-to-dr", "tagged-datasets"]
        assert config.rules[0].propagate_deletes and config.rules[0].prefix == "app/"
    others = [h for h in by_handler if h not in readers]
    for handler in others:
        assert "SKYHOP_RULES" not in by_handler[handler]["Properties"]["Environment"]["Variables"]
    submit = by_handler["functions.aws.submit.handler"]["Properties"]["Environment"]["Variables"]
    assert submit["SKYHOP_TRANSFER_LOCATIONS"] == "s3://adhoc-in,s3://adhoc-out"


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
        for role in (ref_id(r) for r in as_list(statement["Resource"])):
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
    destination = gateway_role(resources, "destination")  # sources and relays get no key
    submit = role_statements(resources, function_role(resources, "functions.aws.submit.handler"))
    grant = next(s for s in submit if "kms:CreateGrant" in as_list(s["Action"]))
    assert grant["Condition"] == {
        "StringEquals": {
            "kms:GranteePrincipal": {"Fn::GetAtt": [destination, "Arn"]},
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


GATEWAY_ROLES = ("source", "relay", "destination")
S3_READS = {"s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectAttributes", "s3:ListBucket"}


def gateway_profiles(resources: dict[str, dict]) -> dict[str, str]:
    """The gateway roles' instance profiles, by gateway role (from the functions' env)."""
    env = next(iter(skyhop_functions(resources).values()))["Properties"]["Environment"]
    return {
        role: ref_id(env["Variables"][f"SKYHOP_GATEWAY_{role.upper()}_PROFILE_ARN"])
        for role in GATEWAY_ROLES
    }


def gateway_role(resources: dict[str, dict], role: str) -> str:
    profile = resources[gateway_profiles(resources)[role]]
    return ref_id(profile["Properties"]["Roles"][0])


def s3_grants(resources: dict[str, dict], role: str) -> dict[str, set[str]]:
    """S3 action -> the resources a gateway role is granted it on."""
    out: dict[str, set[str]] = {}
    for statement in role_statements(resources, gateway_role(resources, role)):
        for action in as_list(statement["Action"]):
            if action.startswith("s3:"):
                out.setdefault(action, set()).update(
                    arn_text(r) for r in as_list(statement["Resource"])
                )
    return out


def test_each_gateway_role_has_its_own_identity(resources: dict[str, dict]) -> None:
    """Issue 19 item 9: every gateway shared one role with read and write on every
    transfer bucket. Now one role (and instance profile) per gateway role."""
    roles = {role: gateway_role(resources, role) for role in GATEWAY_ROLES}
    assert len(set(roles.values())) == 3
    for role_id in roles.values():
        trust = resources[role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert [s["Principal"] for s in trust] == [{"Service": "ec2.amazonaws.com"}]
        actions = {a for s in role_statements(resources, role_id) for a in as_list(s["Action"])}
        assert {"sqs:SendMessage", "sqs:ReceiveMessage"} <= actions
        assert not any(a.startswith(("ec2:", "dynamodb:", "iam:", "kms:")) for a in actions)


def test_a_relay_has_no_storage_access_at_all(resources: dict[str, dict]) -> None:
    assert s3_grants(resources, "relay") == {}


def test_a_source_gateway_only_reads_its_sources(resources: dict[str, dict]) -> None:
    grants = s3_grants(resources, "source")
    assert grants and set(grants) <= S3_READS | {"s3:GetBucketLocation"}
    objects = grants["s3:GetObject"]
    assert objects == {
        "arn:${AWS::Partition}:s3:::adhoc-in/*",
        "arn:${AWS::Partition}:s3:::adhoc-out/*",
        "arn:${AWS::Partition}:s3:::acme-logs/app/*",
        "arn:${AWS::Partition}:s3:::acme-raw/*",
        "arn:${AWS::Partition}:s3:::*/*",  # a bucket_tag rule's sources, this account's only
    }
    assert not any("acme-dr" in r or "acme-eu-replica" in r for r in objects)  # destinations


def test_a_destination_gateway_only_writes_its_destinations(resources: dict[str, dict]) -> None:
    grants = s3_grants(resources, "destination")
    assert not set(grants) & {"s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectAcl"}
    writes = {
        "arn:${AWS::Partition}:s3:::adhoc-in/*",
        "arn:${AWS::Partition}:s3:::adhoc-out/*",
        "arn:${AWS::Partition}:s3:::acme-dr/raw/*",
        "arn:${AWS::Partition}:s3:::acme-eu-replica/datasets/*",
    }
    assert grants["s3:PutObject"] == writes
    # what it reads is what it may write (its own parts, for the checks), never a source
    assert grants["s3:GetObject"] == writes
    everything = set().union(*grants.values())
    assert not any("acme-logs" in r or "acme-raw" in r or r.endswith(":::*/*") for r in everything)


def test_gateways_install_the_deployed_code_by_its_hash(
    resources: dict[str, dict], tmp_path: Path
) -> None:
    """Issue 19 item 12: gateway VMs pip-installed skyhop unpinned from the public
    index. The stack uploads the wheel of the code it deploys (an S3 asset); the
    launching functions get its location and SHA-256 and may read that one object
    (to sign a URL of it); no gateway role may read it (a relay touches no storage)."""
    from skyhop.compute.package import build_wheel, sha256_of

    digest = sha256_of(build_wheel(tmp_path))
    for fn in skyhop_functions(resources).values():
        text = json.dumps(fn["Properties"]["Environment"]["Variables"]["SKYHOP_GATEWAY_WHEEL"])
        assert digest in text and "skyhop-" in text and "pydantic==" in text
    signers = set()
    for key, statement in statements(resources):
        if statement.get("Sid") == "SignGatewayWheel":
            assert as_list(statement["Action"]) == ["s3:GetObject"], key
            assert len(as_list(statement["Resource"])) == 1, key
            signers.add(key)
    launchers = {function_role(resources, h) for h in LAUNCHERS}
    assert len(signers) == len(launchers) == 2
    for role in GATEWAY_ROLES:
        mine = role_statements(resources, gateway_role(resources, role))
        assert not any(s.get("Sid") == "SignGatewayWheel" for s in mine)


def test_gateway_launches_may_pass_only_the_gateway_roles(resources: dict[str, dict]) -> None:
    passes = [s for _, s in statements(resources) if "iam:PassRole" in as_list(s["Action"])]
    assert passes
    roles = {gateway_role(resources, r) for r in GATEWAY_ROLES}
    for statement in passes:
        assert {ref_id(r) for r in as_list(statement["Resource"])} == roles


# ---------------------------------------------------------------- IAM: issue 19, item 11


LAUNCHERS = ("functions.aws.submit.handler", "functions.aws.reaper.handler")
GATEWAY_REGIONS = ["eu-west-1", "us-west-2"]  # cdk_default's gatewayRegions, sorted
S3_WRITES = {
    "s3:PutObject",
    "s3:AbortMultipartUpload",
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:PutObjectAcl",
    "s3:RestoreObject",
}


def granting(resources: dict[str, dict], action: str) -> list[tuple[str, dict]]:
    return [(k, s) for k, s in statements(resources) if action in as_list(s["Action"])]


def launch_template(resources: dict[str, dict]) -> str:
    return next(iter(of_type(resources, "AWS::EC2::LaunchTemplate")))


def gateway_profile_arns(resources: dict[str, dict]) -> list[dict]:
    return [
        {"Fn::GetAtt": [p, "Arn"]}
        for _, p in sorted(gateway_profiles(resources).items())  # destination, relay, source
    ]


def kinds(statement: dict) -> set[str]:
    """The EC2 resource types a statement names (``instance``, ``image``, ...)."""
    out = set()
    for r in as_list(statement["Resource"]):
        text = arn_text(r)
        out.add(text.rsplit(":", 1)[-1].split("/", 1)[0])
    return out


def test_run_instances_requires_the_stack_template_imdsv2_and_the_gateway_profile(
    resources: dict[str, dict],
) -> None:
    """Issue 19 item 11: RunInstances allowed any AMI with arbitrary user data and the
    gateway profile. In the stack's region every resource of a launch must come with
    the stack's own launch template, the image *from* it; elsewhere (the gateway
    regions, where the stack has no template) only an Amazon-owned image; always
    IMDSv2 and the gateway instance profile."""
    lt = launch_template(resources)
    lt_arn = (
        "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:launch-template/${" + lt + "}"
    )
    profile = gateway_profile_arns(resources)
    found = granting(resources, "ec2:RunInstances")
    seen_here: set[str] = set()
    seen_elsewhere: set[str] = set()
    for key, statement in found:
        assert as_list(statement["Action"]) == ["ec2:RunInstances"], key
        cond = statement["Condition"]
        text = {arn_text(r) for r in as_list(statement["Resource"])}
        if "ArnEquals" in cond and "ec2:LaunchTemplate" in cond["ArnEquals"]:
            assert arn_text(cond["ArnEquals"]["ec2:LaunchTemplate"]) == lt_arn, key
            assert all(":ec2:${AWS::Region}:" in t for t in text), (key, text)
            seen_here |= kinds(statement)
            where = "here"
        else:
            assert cond["StringEquals"]["aws:RequestedRegion"] == GATEWAY_REGIONS, key
            assert cond["StringNotEquals"] == {"aws:RequestedRegion": {"Ref": "AWS::Region"}}
            seen_elsewhere |= kinds(statement)
            where = "elsewhere"
        if "instance" in kinds(statement):
            assert cond["StringEquals"]["ec2:MetadataHttpTokens"] == "required", key
            assert cond["ArnEquals"]["ec2:InstanceProfile"] == profile, key
            assert cond["StringEquals"]["aws:RequestTag/skyhop"] == "gateway", key
            assert cond["Null"] == {"aws:RequestTag/skyhop:job": "false"}, key
        if "image" in kinds(statement):
            assert kinds(statement) == {"image"}, key
            if where == "here":
                assert cond["Bool"] == {"ec2:IsLaunchTemplateResource": "true"}, key
            else:
                assert cond["StringEquals"]["ec2:Owner"] == "amazon", key
        if kinds(statement) & {"subnet", "security-group"}:
            assert cond["StringEquals"]["aws:ResourceTag/skyhop"] == "network", key
        if "security-group" in kinds(statement):
            assert cond["Null"] == {"aws:ResourceTag/skyhop:job": "false"}, key
    assert seen_here == {
        "instance", "volume", "image", "network-interface", "subnet", "security-group",
        "launch-template",
    }  # fmt: skip
    assert seen_elsewhere == seen_here - {"launch-template"}
    for handler in LAUNCHERS:
        mine = role_statements(resources, function_role(resources, handler))
        assert sum("ec2:RunInstances" in as_list(s["Action"]) for s in mine) == 12, handler


def test_the_launch_template_is_imdsv2_only(template: assertions.Template) -> None:
    template.has_resource_properties(
        "AWS::EC2::LaunchTemplate",
        {
            "LaunchTemplateData": assertions.Match.object_like(
                {"MetadataOptions": {"HttpPutResponseHopLimit": 1, "HttpTokens": "required"}}
            )
        },
    )


def test_terminate_matches_only_this_stacks_gateways(resources: dict[str, dict]) -> None:
    """Issue 19 item 11: TerminateInstances matched any ``skyhop`` tag value, so one
    stack (or anything tagged skyhop=...) could end another stack's gateways. Now only
    instances tagged ``skyhop=gateway`` that carry *this* stack's gateway instance
    profile (which only this stack's launch permissions can attach: PassRole names
    its role alone), in the stack's regions."""
    profile = gateway_profile_arns(resources)
    found = granting(resources, "ec2:TerminateInstances")
    assert len(found) == 3  # submit (failed launches), gateway_events, reaper
    for key, statement in found:
        assert statement["Condition"] == {
            "StringEquals": {
                "aws:RequestedRegion": [{"Ref": "AWS::Region"}, *GATEWAY_REGIONS],
                "aws:ResourceTag/skyhop": "gateway",
            },
            "ArnEquals": {"ec2:InstanceProfile": profile},
        }, key


def test_subnets_and_groups_are_made_only_in_the_skyhop_vpc(resources: dict[str, dict]) -> None:
    """Issue 19 item 11: CreateSubnet and CreateSecurityGroup were allowed in any VPC
    (the statement creating tagged resources also named vpc/* with only a request-tag
    condition, which every tagged create passes). Now the VPC must be skyhop's:
    tagged skyhop=network, a tag only CreateVpc (tagged at creation) can put there."""
    checked = 0
    for key, statement in statements(resources):
        actions = set(as_list(statement["Action"]))
        if not actions & {
            "ec2:CreateSubnet",
            "ec2:CreateSecurityGroup",
            "ec2:AttachInternetGateway",
        }:
            continue
        cond = statement["Condition"]
        if "vpc" in kinds(statement):
            assert cond["StringEquals"]["aws:ResourceTag/skyhop"] == "network", key
            assert "aws:RequestTag/skyhop" not in json.dumps(cond), key
            checked += 1
        else:
            assert cond["StringEquals"]["aws:RequestTag/skyhop"] == "network", key
    assert checked == 2  # submit and reaper set the network up
    # only CreateVpc names a VPC it creates
    for key, statement in statements(resources):
        if "vpc" in kinds(statement) and "aws:RequestTag/skyhop" in json.dumps(
            statement.get("Condition", {})
        ):
            assert as_list(statement["Action"]) in (["ec2:CreateVpc"], ["ec2:CreateTags"]), key


def test_routes_change_only_in_route_tables_of_the_skyhop_vpc(resources: dict[str, dict]) -> None:
    """Issue 19 item 11: CreateRoute was allowed on any route table of the stack's
    regions (the provider routed through the VPC's untagged main table), and any
    route table could be tagged skyhop=network. Now the skyhop subnet has a route
    table of its own, created tagged skyhop=network (CreateRouteTable, only in a VPC
    tagged so); routes go, and subnets are associated, only in a table tagged so; a
    route table gets that tag only from the CreateRouteTable call that makes it."""
    network = {"aws:ResourceTag/skyhop": "network"}
    for action in ("ec2:CreateRoute", "ec2:AssociateRouteTable"):
        found = granting(resources, action)
        assert len(found) == 2, action  # submit and reaper set the network up
        for key, statement in found:
            assert kinds(statement) <= {"route-table", "subnet"}, (key, action)
            cond = statement["Condition"]
            assert cond["StringEquals"] == {
                "aws:RequestedRegion": [{"Ref": "AWS::Region"}, *GATEWAY_REGIONS],
                **network,
            }, (key, action)
    made = granting(resources, "ec2:CreateRouteTable")
    assert made
    for key, statement in made:
        cond = statement["Condition"]["StringEquals"]
        if "vpc" in kinds(statement):
            assert cond["aws:ResourceTag/skyhop"] == "network", key
            assert "aws:RequestTag/skyhop" not in cond, key
        else:
            assert "route-table" in kinds(statement), key
            assert cond["aws:RequestTag/skyhop"] == "network", key
    for key, statement in granting(resources, "ec2:CreateTags"):
        if "route-table" in kinds(statement):
            creating = statement["Condition"]["StringEquals"]["ec2:CreateAction"]
            assert "CreateRouteTable" in creating, key
    assert "ec2:CreateRoute" not in UNCONDITIONED_EC2


def test_every_ec2_mutation_is_limited_to_the_stacks_regions(resources: dict[str, dict]) -> None:
    """Every EC2 change happens only in the stack's region and the configured gateway
    regions."""
    for key, statement in statements(resources):
        mutations = [a for a in as_list(statement["Action"]) if a in EC2_MUTATIONS]
        if not mutations:
            continue
        regions = statement["Condition"].get("StringEquals", {}).get("aws:RequestedRegion")
        if regions is None:  # launches from the stack's template name its region in the ARN
            assert all(
                ":ec2:${AWS::Region}:" in arn_text(r) for r in as_list(statement["Resource"])
            )
            continue
        assert regions in ([{"Ref": "AWS::Region"}, *GATEWAY_REGIONS], GATEWAY_REGIONS), key


def test_security_groups_change_only_per_job(resources: dict[str, dict]) -> None:
    """trust's per-job security groups (skyhop-job-JOB, tagged skyhop=network and
    skyhop:job): rules go only into a job's own group, and only a job's group can be
    deleted; the shared skyhop-gateways group (no job tag) never admits anything."""
    for action in ("ec2:AuthorizeSecurityGroupIngress", "ec2:DeleteSecurityGroup"):
        for key, statement in granting(resources, action):
            if "security-group" not in kinds(statement):
                continue
            cond = statement["Condition"]
            assert cond["StringEquals"]["aws:ResourceTag/skyhop"] == "network", key
            assert cond["Null"] == {"aws:ResourceTag/skyhop:job": "false"}, key
    rules = [
        s for _, s in granting(resources, "ec2:AuthorizeSecurityGroupIngress")
        if kinds(s) == {"security-group-rule"}
    ]  # fmt: skip
    assert rules and all(
        s["Condition"]["Null"] == {"aws:RequestTag/skyhop:job": "false"} for s in rules
    )


def test_no_write_on_every_bucket(resources: dict[str, dict]) -> None:
    """Issue 19 item 11: a bucket_tag rule granted write on ``s3:::*/*`` (every object
    of the account) to submit, gateway_events, the reaper and the gateways. A tag rule's
    buckets are sources: read-only, and only this account's."""
    tagged = 0
    for key, statement in statements(resources):
        wild = [
            arn_text(r) for r in as_list(statement["Resource"]) if arn_text(r).endswith(":::*/*")
        ]
        wild += [
            arn_text(r) for r in as_list(statement["Resource"]) if arn_text(r).endswith(":::*")
        ]
        if not wild:
            continue
        tagged += 1
        assert not set(as_list(statement["Action"])) & S3_WRITES, (key, statement["Sid"])
        assert "s3:ListBucketMultipartUploads" not in as_list(statement["Action"]), key
        assert statement["Condition"] == {
            "StringEquals": {"s3:ResourceAccount": {"Ref": "AWS::AccountId"}}
        }, key
    assert tagged == 10  # objects and buckets, for the 4 transfer roles and bucket_events


def test_rule_sources_are_read_only(resources: dict[str, dict]) -> None:
    """Issue 19 item 11: the rules' source buckets were granted read *and* write (with
    the transfer buckets). Sources are read under their prefix only; destinations are
    written under their prefix only; the transfer buckets stay read-write."""
    sources = ("acme-logs", "acme-raw")
    for key, statement in statements(resources):
        actions = set(as_list(statement["Action"]))
        for text in (arn_text(r) for r in as_list(statement["Resource"])):
            if any(text.startswith(f"arn:${{AWS::Partition}}:s3:::{b}") for b in sources):
                assert not actions & S3_WRITES, (key, statement.get("Sid"), text)
                assert "s3:ListBucketMultipartUploads" not in actions, (key, text)
    for handler in (*LAUNCHERS, "functions.aws.gateway_events.handler"):
        mine = role_statements(resources, function_role(resources, handler))
        reads = {
            arn_text(r)
            for s in mine
            if "s3:GetObject" in as_list(s["Action"]) and "s3:PutObject" not in as_list(s["Action"])
            for r in as_list(s["Resource"])
            if "acme-" in arn_text(r)
        }
        assert reads == {
            "arn:${AWS::Partition}:s3:::acme-logs/app/*",
            "arn:${AWS::Partition}:s3:::acme-raw/*",
        }, handler
        writes = {
            arn_text(r)
            for s in mine
            if "s3:PutObject" in as_list(s["Action"])
            for r in as_list(s["Resource"])
        }
        assert writes == {
            "arn:${AWS::Partition}:s3:::acme-dr/raw/*",
            "arn:${AWS::Partition}:s3:::acme-eu-replica/datasets/*",
            "arn:${AWS::Partition}:s3:::adhoc-in/*",
            "arn:${AWS::Partition}:s3:::adhoc-out/*",
        }, handler


def test_every_function_has_bounded_concurrency(resources: dict[str, dict]) -> None:
    """Issue 19 item 11: no function had reserved concurrency and no SQS trigger a
    maximum concurrency, so a flood of requests could start any number of jobs (and
    gateways) at once and starve the account's other functions."""
    fns = skyhop_functions(resources)
    reserved = {
        f["Properties"]["Handler"]: f["Properties"].get("ReservedConcurrentExecutions")
        for f in fns.values()
    }
    assert reserved == {
        "functions.aws.submit.handler": 5,
        "functions.aws.gateway_events.handler": 10,
        "functions.aws.bucket_events.handler": 10,
        "functions.aws.reaper.handler": 1,
    }
    for mapping in of_type(resources, "AWS::Lambda::EventSourceMapping").values():
        props = mapping["Properties"]
        fn = fns[ref_id(props["FunctionName"])]["Properties"]
        assert props["ScalingConfig"]["MaximumConcurrency"] == fn["ReservedConcurrentExecutions"]


def test_the_reaper_never_overlaps_itself(resources: dict[str, dict]) -> None:
    """Issue 19 item 11: a reaper run (up to 15 minutes) could overlap the next ones
    (every 5 minutes). Reserved concurrency 1 runs one at a time, and a scheduled run
    throttled by the one still running is dropped (no retry, expired before the next
    schedule) rather than queued behind it."""
    reaper = next(
        k
        for k, f in skyhop_functions(resources).items()
        if f["Properties"]["Handler"] == "functions.aws.reaper.handler"
    )
    assert resources[reaper]["Properties"]["ReservedConcurrentExecutions"] == 1
    (config,) = [
        c["Properties"]
        for c in of_type(resources, "AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["FunctionName"] == {"Ref": reaper}
    ]
    assert config["MaximumRetryAttempts"] == 0
    assert config["MaximumEventAgeInSeconds"] <= 300


def test_s3_notifications_to_sqs_name_the_source_account(cdk_sqs: Synthesis) -> None:
    """Issue 19 item 11: the S3 -> SQS queue policy named only the bucket ARN (which
    holds no account): it now also requires ``aws:SourceAccount``."""
    resources = cdk_sqs.json["Resources"]
    found = 0
    for policy in of_type(resources, "AWS::SQS::QueuePolicy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement.get("Principal") != {"Service": "s3.amazonaws.com"}:
                continue
            found += 1
            assert as_list(statement["Action"]) == ["sqs:SendMessage"]
            assert statement["Condition"]["StringEquals"] == {
                "aws:SourceAccount": {"Ref": "AWS::AccountId"}
            }
            assert "aws:SourceArn" in statement["Condition"]["ArnLike"]
    assert found == 2  # media-in, docs-in


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
        # #19 item 9: each gateway's queue gets a policy naming its own instance
        assert "sqs:SetQueueAttributes" in actions, handler
        for statement in granted:
            assert as_list(statement["Resource"]) != ["*"]
            assert "sqs:ListQueues" not in as_list(statement["Action"])
        # ListQueues supports no resource-level permission: alone on "*", nothing else there.
        assert len(lists) == 1 and as_list(lists[0]["Action"]) == ["sqs:ListQueues"], handler
        assert lists[0]["Resource"] == "*"
    # Nothing else may create or delete queues, or change their attributes (a queue's
    # policy is what keeps other instances off it).
    for key, statement in statements(resources):
        actions = set(as_list(statement["Action"]))
        if actions & {
            "sqs:CreateQueue",
            "sqs:DeleteQueue",
            "sqs:TagQueue",
            "sqs:SetQueueAttributes",
        }:
            assert [arn_text(r) for r in as_list(statement["Resource"])] == [CONTROL_ARN], key


@pytest.mark.parametrize("gateway", GATEWAY_ROLES)
def test_gateway_role_takes_orders_from_its_control_queue(
    resources: dict[str, dict], gateway: str
) -> None:
    role = gateway_role(resources, gateway)
    granted = control_statements(resources, role)
    actions = {a for s in granted for a in as_list(s["Action"])}
    assert actions == set(CONTROL_QUEUE_GATEWAY_ACTIONS)
    everything = {a for s in role_statements(resources, role) for a in as_list(s["Action"])}
    assert not everything & {
        "sqs:CreateQueue",
        "sqs:DeleteQueue",
        "sqs:ListQueues",
        "sqs:SetQueueAttributes",  # a gateway cannot lift its queue's policy
    }
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
                                "Tags": [{"Key": "skyhop:stack", "Value": "Skyhop"}],
                            }
                        ]
                    ),
                }
            )
        },
    )
    lt = next(iter(of_type(resources, "AWS::EC2::LaunchTemplate").values()))
    assert lt["Properties"]["LaunchTemplateName"] == "Skyhop-gateway"
    # the provider's request tags (skyhop=gateway, Name, the job) have their keys to
    # themselves; the template names the stack under its own key
    for spec in lt["Properties"]["LaunchTemplateData"]["TagSpecifications"]:
        assert spec["Tags"] == [{"Key": "skyhop:stack", "Value": "Skyhop"}], spec
    assert {"Key": "skyhop", "Value": "Skyhop"} in lt["Properties"]["TagSpecifications"][0]["Tags"]
    profile = lt["Properties"]["LaunchTemplateData"]["IamInstanceProfile"]["Arn"]
    assert resources[ref_id(profile)]["Type"] == "AWS::IAM::InstanceProfile"
