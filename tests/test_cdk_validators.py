"""Real validators on every synthesised template: cdk-nag, cfn-lint, parliament, checkov.

Each configuration is synthesised once for the session (``tests/fixtures/cdk.py``).
cdk-nag's AwsSolutions checks run during synthesis (``infra_cdk.app.build_app``) and
write ``validation-report.json``; cfn-lint and parliament run in-process; checkov runs
from its own virtualenv (``.venv/tools/checkov``, made by ``make setup``: it pins an
older boto3 than skyhop's, so it cannot share the project's environment), once for
both templates.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra_cdk import checkov_skips, nag
from infra_cdk.permissions import CDK_WILDCARD_REASONS, WILDCARD_REASONS
from tests.fixtures.cdk import Synthesis

CONFIGS = ["cdk_default", "cdk_sqs"]
REGIONS = ["us-east-1", "us-west-2", "eu-west-1"]
CHECKOV = Path(sys.prefix) / "tools" / "checkov" / "bin" / "checkov"


@pytest.fixture(params=CONFIGS)
def synthesis(request: pytest.FixtureRequest) -> Synthesis:
    return request.getfixturevalue(request.param)


# ---------------------------------------------------------------- cdk-nag


def nag_report(synthesis: Synthesis) -> dict[str, Any]:
    (report,) = [p for p in synthesis.report["pluginReports"] if p["pluginName"] == nag.PACK]
    return report


def test_cdk_nag_aws_solutions_finds_nothing_unacknowledged(synthesis: Synthesis) -> None:
    assert synthesis.report, "synthesis wrote no validation report: cdk-nag did not run"
    report = nag_report(synthesis)
    left = [
        (v["ruleName"], [c["constructPath"] for c in v["violatingConstructs"]])
        for v in report["violations"]
    ]
    assert left == [], f"cdk-nag findings nobody acknowledged: {left}"
    assert report["conclusion"] == "success"
    assert synthesis.error is None


def test_every_acknowledged_nag_finding_has_its_reason(synthesis: Synthesis) -> None:
    """Each kept finding is one of the kinds the stack keeps on purpose, with the
    reason written next to what grants it."""
    kept = nag_report(synthesis)["suppressedViolations"]
    assert kept
    reasons = set(WILDCARD_REASONS.values()) | set(CDK_WILDCARD_REASONS.values())
    for finding in kept:
        rule = finding["ruleName"]
        assert finding["reason"].strip(), rule
        if rule.startswith("AwsSolutions-IAM5[Resource::"):
            assert all(part in reasons for part in finding["reason"].split(nag.REASON_SEPARATOR)), (
                rule
            )
        else:
            assert rule in nag.KEPT or rule in nag.FUNCTIONS_KEPT, rule
            assert finding["reason"] == {**nag.KEPT, **nag.FUNCTIONS_KEPT}[rule]
    # no wildcard action anywhere, so nothing of that kind is ever acknowledged
    assert not [f for f in kept if "[Action::" in f["ruleName"]]


def test_a_wildcard_statement_without_a_reason_fails_synthesis() -> None:
    import aws_cdk as cdk
    from aws_cdk import aws_iam as iam

    app = cdk.App()
    stack = cdk.Stack(app, "S")
    role = iam.Role(stack, "R", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    role.add_to_principal_policy(
        iam.PolicyStatement(
            sid="Unexplained", actions=["s3:GetObject"], resources=["arn:aws:s3:::b/*"]
        )
    )
    with pytest.raises(nag.NagError, match=r"S/R: statement Unexplained grants arn:aws:s3:::b/\*"):
        nag.acknowledge(stack)


def test_nag_text_renders_tokens_as_cdk_nag_does() -> None:
    value = {
        "Fn::Join": [
            "",
            ["arn:", {"Ref": "AWS::Partition"}, ":logs:", {"Fn::GetAtt": ["Logs1", "Arn"]}, ":*"],
        ]
    }
    assert nag.nag_text(value) == "arn:<AWS::Partition>:logs:<Logs1.Arn>:*"


# ---------------------------------------------------------------- cfn-lint


def test_cfn_lint_reports_no_error(synthesis: Synthesis) -> None:
    from cfnlint.api import ManualArgs, lint

    matches = lint(synthesis.template_path.read_text(), config=ManualArgs(regions=REGIONS))
    errors = [f"{m.rule.id} {m.message} ({'/'.join(map(str, m.path))})" for m in matches
              if m.rule.id.startswith("E")]  # fmt: skip
    assert errors == []
    # the only warnings: CDK's own DependsOn next to a GetAtt of the same resource
    assert {m.rule.id for m in matches} <= {"W3005"}


# ---------------------------------------------------------------- parliament


def render(value: Any, resources: dict[str, Any]) -> Any:
    """A CloudFormation value with its intrinsics replaced by plausible literal ARNs."""
    if isinstance(value, list):
        return [render(v, resources) for v in value]
    if not isinstance(value, dict):
        return value
    if "Fn::Join" in value:
        return "".join(str(render(v, resources)) for v in value["Fn::Join"][1])
    if "Ref" in value:
        pseudo = {
            "AWS::Partition": "aws",
            "AWS::Region": "us-east-1",
            "AWS::AccountId": "123456789012",
        }
        return pseudo.get(value["Ref"], f"lt-{value['Ref'][:8].lower()}")
    if "Fn::GetAtt" in value:
        name = value["Fn::GetAtt"][0]
        return {
            "AWS::DynamoDB::GlobalTable": f"arn:aws:dynamodb:us-east-1:123456789012:table/{name}",
            "AWS::KMS::Key": f"arn:aws:kms:us-east-1:123456789012:key/{name}",
            "AWS::Logs::LogGroup": f"arn:aws:logs:us-east-1:123456789012:log-group:{name}:*",
            "AWS::IAM::Role": f"arn:aws:iam::123456789012:role/{name}",
            "AWS::IAM::InstanceProfile": f"arn:aws:iam::123456789012:instance-profile/{name}",
            "AWS::SQS::Queue": f"arn:aws:sqs:us-east-1:123456789012:{name}",
        }[resources[name]["Type"]]
    return {k: render(v, resources) for k, v in value.items()}


def role_documents(resources: dict[str, Any]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Each role with every statement of every policy attached to it (CDK splits a
    long one into overflow managed policies)."""
    by_role: dict[str, list[dict[str, Any]]] = {}
    for res in resources.values():
        if res["Type"] not in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            continue
        doc = render(res["Properties"]["PolicyDocument"], resources)
        for role in res["Properties"].get("Roles", []):
            by_role.setdefault(role["Ref"], []).extend(doc["Statement"])
    yield from sorted(by_role.items())


def test_parliament_finds_nothing_but_statements_split_by_resource(synthesis: Synthesis) -> None:
    """parliament checks each statement alone and wants every resource type an action
    requires in that statement; skyhop splits RunInstances (and the like) into one
    statement per resource type, each with the conditions that type supports, so the
    only findings it may make are RESOURCE_MISMATCHes that the role's *other*
    statements for the same action cover. Unknown actions or condition keys, bad
    ARNs, anything else, fail."""
    from parliament import analyze_policy_string, is_arn_strictly_valid

    resources = synthesis.json["Resources"]
    checked = 0
    for role, stmts in role_documents(resources):
        granted: dict[str, list[str]] = {}
        for s in stmts:
            for action in s["Action"] if isinstance(s["Action"], list) else [s["Action"]]:
                rs = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
                granted.setdefault(action, []).extend(rs)
        policy = analyze_policy_string(json.dumps({"Version": "2012-10-17", "Statement": stmts}))
        for finding in policy.findings:
            checked += 1
            assert finding.issue == "RESOURCE_MISMATCH", (role, finding.issue, finding.detail)
            for missing in finding.detail:
                action, arn_format = missing["action"], missing["required_format"]
                kind = re.split(r"[:/]", arn_format.split(":", 5)[5])[0]
                if action.startswith("s3:") and kind == "accesspoint":
                    continue  # object OR access point: skyhop calls S3 on objects
                assert any(is_arn_strictly_valid(kind, arn_format, r) for r in granted[action]), (
                    role,
                    action,
                    arn_format,
                )
    assert checked  # the split statements are there, and were each accounted for


# ---------------------------------------------------------------- checkov


@pytest.fixture(scope="session")
def checkov_results(cdk_default: Synthesis, cdk_sqs: Synthesis) -> dict[str, Any]:
    assert CHECKOV.exists(), f"{CHECKOV} is missing: run `make setup` (checkov's own venv)"
    files = {s.template_path.name: s for s in (cdk_default, cdk_sqs)}
    cmd = [str(CHECKOV), "--framework", "cloudformation", "--output", "json", "--skip-download"]
    for synthesis in files.values():
        cmd += ["--file", str(synthesis.template_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    body = json.loads(done.stdout)
    runs = body if isinstance(body, list) else [body]
    return {"runs": runs}


def test_checkov_fails_no_check(checkov_results: dict[str, Any]) -> None:
    failed, passed, skipped = [], 0, []
    for run in checkov_results["runs"]:
        results = run["results"]
        passed += len(results["passed_checks"])
        failed += [(c["check_id"], c["resource"], c["file_path"]) for c in results["failed_checks"]]
        skipped += results["skipped_checks"]
    assert failed == []
    assert passed > 100
    reasons = {r for skips in checkov_skips.SKIPS.values() for _, r in skips}
    reasons |= {r for _, r in checkov_skips.CDK_FUNCTION_SKIPS}
    for skip in skipped:
        assert skip["check_result"]["suppress_comment"] in reasons, skip["check_id"]
