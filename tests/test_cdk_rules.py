"""Replication rules and context values of the CDK app: validation, errors, SQS-mode wiring.

Most tests here are pure Python (``infra_cdk.rules`` and ``infra_cdk.settings``
import no CDK). The synthesis-failure tests go through the real app entry; the
SQS-mode test synthesises one small stack holding only a queue and the
``ReplicationRules`` construct.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from infra_cdk.rules import (
    RULES_ENV_BUDGET,
    RulesFileError,
    bucket_notifications,
    check_rules,
    data_access,
    load_rules,
    parse_rules,
    rules_json,
    subscriptions,
)
from infra_cdk.settings import SettingsError, settings_from_context
from skyhop.errors import UsageError

INFRA = Path(__file__).resolve().parents[1] / "infra_cdk"

GOOD = {
    "version": 1,
    "rules": [
        {"name": "a", "source_bucket": "src-a", "prefix": "in/", "destination": "s3://dst/a/"},
        {"name": "b", "bucket_tag": "team=eu", "destination": "gs://eu-copy/"},
    ],
}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------- loading


def test_yaml_and_json_rules_files_load(tmp_path: Path) -> None:
    yaml_file = write(
        tmp_path,
        "rules.yml",
        "version: 1\nrules:\n  - name: a\n    source_bucket: src-a\n    prefix: in/\n"
        "    destination: s3://dst/a/\n  - name: b\n    bucket_tag: team=eu\n"
        "    destination: gs://eu-copy/\n",
    )
    json_file = write(tmp_path, "rules.json", json.dumps(GOOD))
    assert load_rules(yaml_file) == load_rules(json_file)
    config = load_rules(json_file)
    assert [r.name for r in config.rules] == ["a", "b"]


def test_example_rules_file_is_valid() -> None:
    example = INFRA / "rules.example.yaml"
    config = load_rules(example)
    assert len(config.rules) == 3
    check_rules(config)
    rules_json(config)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            {"name": "to-nowhere", "source_bucket": "src", "destination": "ftp://x/y"},
            "rule 'to-nowhere' (rules[1]): destination:",
        ),
        (
            {"name": "sourceless", "destination": "s3://dst/"},
            "rule 'sourceless' (rules[1]): give exactly one of source_bucket or bucket_tag",
        ),
        (
            {
                "name": "both",
                "source_bucket": "src",
                "bucket_tag": "k=v",
                "destination": "s3://dst/",
            },
            "rule 'both' (rules[1]): give exactly one of source_bucket or bucket_tag",
        ),
        (
            {"name": "bad-tag", "bucket_tag": "no-equals-sign", "destination": "s3://dst/"},
            "rule 'bad-tag' (rules[1]): bucket_tag:",
        ),
        (
            {"name": "typo", "source_bucket": "src", "destination": "s3://dst/", "prefx": "x/"},
            "rule 'typo' (rules[1]): prefx: Extra inputs are not permitted",
        ),
        (
            {"name": "bad name!", "source_bucket": "src", "destination": "s3://dst/"},
            "rule 'bad name!' (rules[1]): name:",
        ),
        (
            {"source_bucket": "src", "destination": "s3://dst/"},
            "rules[1]: name: Field required",
        ),
    ],
)
def test_a_bad_rule_is_named_in_one_line(tmp_path: Path, rule: dict, expected: str) -> None:
    data = {"version": 1, "rules": [GOOD["rules"][0], rule]}
    path = write(tmp_path, "rules.json", json.dumps(data))
    with pytest.raises(RulesFileError) as info:
        load_rules(path)
    message = str(info.value)
    assert message.startswith(f"rules file {path}: ")
    assert expected in message
    assert "\n" not in message
    assert isinstance(info.value, UsageError)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 1\nrules: [\n", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping with 'version' and 'rules'"),
        ("version: 2\nrules: []\n", "version: Input should be 1"),
        ("version: 1\n", "rules: Field required"),
        (
            "rules:\n  - {name: x, source_bucket: s1, destination: 's3://dst/'}\n"
            "  - {name: x, source_bucket: s2, destination: 's3://dst/'}\n",
            "duplicate rule names: x",
        ),
    ],
)
def test_bad_rules_files(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "rules.yaml", text)
    with pytest.raises(RulesFileError, match=expected):
        load_rules(path)


def test_bad_json_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RulesFileError, match=r"not valid JSON: .* at line 1"):
        load_rules(write(tmp_path, "rules.json", "{not json"))
    with pytest.raises(RulesFileError, match="nope.yaml: not found"):
        load_rules(tmp_path / "nope.yaml")


def test_source_bucket_must_be_an_s3_bucket_name() -> None:
    config = parse_rules(
        {"rules": [{"name": "r", "source_bucket": "Not_A_Bucket", "destination": "s3://dst/"}]}
    )
    with pytest.raises(RulesFileError, match=r"rule 'r' \(rules\[0\]\): source_bucket"):
        check_rules(config)


@pytest.mark.parametrize(
    ("prefix", "destination"),
    [("", "s3://same/copy/"), ("logs/", "s3://same/logs/copy/"), ("logs/app/", "s3://same/logs/")],
)
def test_a_rule_that_would_replicate_into_itself_is_refused(prefix: str, destination: str) -> None:
    config = parse_rules(
        {
            "rules": [
                {
                    "name": "loop",
                    "source_bucket": "same",
                    "prefix": prefix,
                    "destination": destination,
                }
            ]
        }
    )
    with pytest.raises(RulesFileError, match="rule 'loop' .* replication would loop"):
        check_rules(config)


def test_rules_that_replicate_into_each_other_are_refused() -> None:
    config = parse_rules(
        {
            "rules": [
                {"name": "ok", "source_bucket": "other", "destination": "s3://unrelated/"},
                {"name": "east", "source_bucket": "east-b", "destination": "s3://west-b/in/"},
                {
                    "name": "west",
                    "source_bucket": "west-b",
                    "prefix": "in/",
                    "destination": "s3://east-b/copy/",
                },
            ]
        }
    )
    with pytest.raises(RulesFileError, match="rules 'east' -> 'west' -> 'east' replicate into"):
        check_rules(config)
    chain = parse_rules(
        {
            "rules": [
                {"name": "one", "source_bucket": "aaa", "destination": "s3://bbb/in/"},
                {
                    "name": "two",
                    "source_bucket": "bbb",
                    "prefix": "in/",
                    "destination": "s3://ccc/",
                },
            ]
        }
    )
    check_rules(chain)  # a chain is fine, only a loop is not


def test_same_bucket_with_separate_prefixes_is_fine() -> None:
    config = parse_rules(
        {
            "rules": [
                {
                    "name": "ok",
                    "source_bucket": "same",
                    "prefix": "in/",
                    "destination": "s3://same/out/",
                }
            ]
        }
    )
    check_rules(config)


def test_tag_selectors_need_eventbridge() -> None:
    config = parse_rules(GOOD)
    check_rules(config, mode="eventbridge")
    with pytest.raises(RulesFileError, match="rule 'b' .* need notificationMode=eventbridge"):
        check_rules(config, mode="sqs")


def test_rules_json_round_trips_and_respects_the_environment_budget() -> None:
    config = parse_rules(GOOD)
    text = rules_json(config)
    assert parse_rules(json.loads(text)) == config
    many = {
        "rules": [
            {
                "name": f"rule-{i}",
                "source_bucket": f"bucket-{i:03d}",
                "destination": "s3://dst/" + "x" * 40,
            }
            for i in range(60)
        ]
    }
    with pytest.raises(RulesFileError, match=f"over the {RULES_ENV_BUDGET}-byte budget"):
        rules_json(parse_rules(many))


# ---------------------------------------------------------------- what the rules subscribe to


def test_event_patterns() -> None:
    config = parse_rules(
        {
            "rules": [
                {
                    "name": "a",
                    "source_bucket": "src",
                    "prefix": "p/",
                    "destination": "s3://dst/",
                    "propagate_deletes": True,
                },
                {"name": "b", "bucket_tag": "k=v", "destination": "s3://dst/"},
            ]
        }
    )
    a, b = subscriptions(config)
    assert a.event_pattern() == {
        "source": ["aws.s3"],
        "detail-type": ["Object Created", "Object Deleted"],
        "detail": {"bucket": {"name": ["src"]}, "object": {"key": [{"prefix": "p/"}]}},
    }
    assert b.event_pattern() == {"source": ["aws.s3"], "detail-type": ["Object Created"]}


def test_sqs_notifications_merge_overlapping_prefixes() -> None:
    config = parse_rules(
        {
            "rules": [
                {
                    "name": "a",
                    "source_bucket": "bkt1",
                    "prefix": "logs/",
                    "destination": "s3://dst/1/",
                },
                {
                    "name": "b",
                    "source_bucket": "bkt1",
                    "prefix": "logs/app/",
                    "destination": "s3://dst/2/",
                },
                {
                    "name": "c",
                    "source_bucket": "bkt1",
                    "prefix": "img/",
                    "destination": "s3://dst/3/",
                    "propagate_deletes": True,
                },
                {"name": "d", "source_bucket": "bkt2", "destination": "gs://ggg/"},
            ]
        }
    )
    notes = {(n.bucket, n.kind, n.prefix) for n in bucket_notifications(config)}
    assert notes == {
        ("bkt1", "created", "img/"),
        ("bkt1", "created", "logs/"),
        ("bkt1", "removed", "img/"),
        ("bkt2", "created", ""),
    }


def test_data_access() -> None:
    access = data_access(parse_rules(GOOD))
    assert access.sources == (("src-a", "in/"),)
    assert access.destinations == (("dst", "a/", False),)
    assert access.tagged_sources and access.tag_keys == ("team",)
    assert access.buckets == ["dst", "src-a"]


# ---------------------------------------------------------------- context values


def test_settings_defaults_and_string_context() -> None:
    settings = settings_from_context(
        {
            "@aws-cdk/core:newStyleStackSynthesis": True,
            "aws:cdk:bundling-stacks": [],
            "transferBuckets": "in-bucket, out-bucket",
            "retainData": "false",
            "logRetentionDays": "90",
        }
    )
    assert settings.stack_name == "Skyhop"
    assert settings.transfer_buckets == ["in-bucket", "out-bucket"]
    assert settings.retain_data is False
    assert settings.log_retention_days == 90
    assert settings.notification_mode == "eventbridge"


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ({"rulesFle": "x.yaml"}, "unknown context value 'rulesFle'; known values: "),
        ({"notificationMode": "sns"}, "context value notificationMode: Input should be"),
        ({"transferBuckets": "Bad_Bucket"}, "transferBuckets: 'Bad_Bucket' is not an S3 bucket"),
        ({"logRetentionDays": 31}, "logRetentionDays: must be one of 1, 3, 5"),
        ({"gatewayRegions": "us-east-1,mars-1"}, "gatewayRegions: 'mars-1' is not an AWS region"),
        ({"gatewayAmiId": "image-1"}, "gatewayAmiId: String should match pattern"),
        ({"powertoolsLayerArn": "arn:nope"}, "powertoolsLayerArn: String should match pattern"),
    ],
)
def test_bad_context_values(context: dict, expected: str) -> None:
    with pytest.raises(SettingsError) as info:
        settings_from_context(context)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- synthesis


def test_an_invalid_rules_file_fails_synthesis_naming_the_rule(tmp_path: Path) -> None:
    from infra_cdk.app import build_app

    bad = write(
        tmp_path,
        "rules.yaml",
        "rules:\n  - name: good\n    source_bucket: src\n    destination: s3://dst/\n"
        "  - name: broken-dest\n    source_bucket: src\n    destination: 'nfs://host/x'\n",
    )
    with pytest.raises(RulesFileError, match=r"rule 'broken-dest' \(rules\[1\]\): destination:"):
        build_app({"rulesFile": str(bad)}, outdir=str(tmp_path / "out"))
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_the_app_entry_prints_one_line_and_exits_non_zero(tmp_path: Path) -> None:
    """What ``cdk synth`` runs: ``python3 app.py`` in ``infra_cdk/`` with the context in the
    environment (the CLI passes it as ``CDK_CONTEXT_JSON``)."""
    bad = write(tmp_path, "rules.yaml", "rules:\n  - name: lonely\n    destination: s3://dst/\n")
    env = {
        **os.environ,
        "CDK_CONTEXT_JSON": json.dumps({"rulesFile": str(bad)}),
        "CDK_OUTDIR": str(tmp_path / "out"),
    }
    result = subprocess.run(
        [sys.executable, "app.py"],
        cwd=INFRA,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    err = result.stderr.strip().splitlines()[-1]
    assert err.startswith("skyhop: rules file ")
    assert "rule 'lonely' (rules[0]): give exactly one of source_bucket or bucket_tag" in err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_sqs_mode_wires_per_bucket_notifications(tmp_path: Path) -> None:
    import aws_cdk as cdk
    from aws_cdk import assertions
    from aws_cdk import aws_sqs as sqs

    from infra_cdk.replication import ReplicationRules

    app = cdk.App(outdir=str(tmp_path / "out"))
    stack = cdk.Stack(app, "SqsMode")
    queue = sqs.Queue(stack, "BucketEvents")
    config = parse_rules(
        {
            "rules": [
                {
                    "name": "a",
                    "source_bucket": "bkt1",
                    "prefix": "logs/",
                    "destination": "s3://dst/1/",
                },
                {
                    "name": "b",
                    "source_bucket": "bkt1",
                    "prefix": "logs/x/",
                    "destination": "s3://dst/2/",
                },
                {
                    "name": "c",
                    "source_bucket": "bkt2",
                    "destination": "gs://ggg/",
                    "propagate_deletes": True,
                },
            ]
        }
    )
    construct = ReplicationRules(stack, "Replication", rules=config, queue=queue, mode="sqs")
    assert construct.event_rules == {}
    template = assertions.Template.from_stack(stack)
    template.resource_count_is("AWS::Events::Rule", 0)
    notes = template.find_resources("Custom::S3BucketNotifications")
    configs = {
        n["Properties"]["BucketName"]: n["Properties"]["NotificationConfiguration"]
        for n in notes.values()
    }
    assert set(configs) == {"bkt1", "bkt2"}
    b1 = configs["bkt1"]["QueueConfigurations"]
    assert [c["Events"] for c in b1] == [["s3:ObjectCreated:*"]]
    assert b1[0]["Filter"] == {"Key": {"FilterRules": [{"Name": "prefix", "Value": "logs/"}]}}
    b2 = configs["bkt2"]["QueueConfigurations"]
    assert sorted(c["Events"][0] for c in b2) == [
        "s3:LifecycleExpiration:*",  # deleted by a lifecycle rule: a delete, as EventBridge says
        "s3:ObjectCreated:*",
        "s3:ObjectRemoved:*",
    ]
    assert all("Filter" not in c for c in b2)
    policy = next(iter(template.find_resources("AWS::SQS::QueuePolicy").values()))
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert {s["Principal"]["Service"] for s in statements} == {"s3.amazonaws.com"}
    assert all("aws:SourceArn" in json.dumps(s["Condition"]) for s in statements)
    # a bucket ARN names no account: the account is required too (issue 19 item 11)
    assert len(statements) == 2, "one statement per bucket"
    assert all(
        s["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
        for s in statements
    )
