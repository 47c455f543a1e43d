"""``skyhop deploy aws``: the CDK CLI of package.json run on infra_cdk/, and the
control-plane profile written from the stack's outputs.

A real deploy cannot run here: the deploy and destroy commands are checked as
built (argv, directory, environment) by a runner that stands in for the CDK
CLI and writes the outputs file ``cdk deploy --outputs-file`` would; the dry
run is the real CDK CLI synthesising offline."""

from __future__ import annotations

import json
import stat
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from skyhop import remotes
from skyhop.cli import main
from skyhop.deploy import cli as deploy_cli

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = {
    "RequestsQueueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/Prod-Requests",
    "GatewayEventsQueueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/Prod-Events",
    "ResultsQueueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/Prod-Results",
    "ManifestTableName": "Prod-Manifest-1A2B",
    "DataKeyArn": "arn:aws:kms:eu-west-1:123456789012:key/abc",
}


class FakeCDK:
    """Records each CDK CLI command; ``deploy`` writes the stack's outputs file."""

    def __init__(self, code: int = 0) -> None:
        self.calls: list[tuple[list[str], Path, dict[str, str]]] = []
        self.code = code

    def __call__(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> int:
        argv = list(argv)
        self.calls.append((argv, cwd, dict(env)))
        if argv[1] == "deploy" and self.code == 0:
            out = Path(argv[argv.index("--outputs-file") + 1])
            out.write_text(json.dumps({argv[2]: OUTPUTS}))
        return self.code


@pytest.fixture
def cdk(monkeypatch: pytest.MonkeyPatch) -> FakeCDK:
    fake = FakeCDK()

    def deployer(deploy):
        deploy.runner = fake
        return deploy

    monkeypatch.setattr(deploy_cli, "aws_deployer", deployer)
    return fake


def test_deploy_runs_the_cdk_cli_and_writes_the_profile(
    cdk: FakeCDK, tmp_path: Path, skyhop_home: Path, capsys
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: []\n")
    args = ["deploy", "aws", "--region", "eu-west-1", "--stack", "Prod", "--rules", str(rules)]
    assert main([*args, "-c", "alarmEmail=ops@example.com", "--name", "prod"]) == 0
    [(argv, cwd, env)] = cdk.calls
    assert argv[0] == str(ROOT / "node_modules" / ".bin" / "cdk")  # package.json's CLI
    assert argv[1:5] == ["deploy", "Prod", "--require-approval", "never"]
    assert argv[argv.index("--app") + 1] == f"{sys.executable} app.py"
    contexts = [argv[i + 1] for i, a in enumerate(argv) if a == "-c"]
    assert contexts == [
        "stackName=Prod",
        f"rulesFile={rules.resolve()}",
        "alarmEmail=ops@example.com",
    ]
    assert cwd == ROOT / "infra_cdk"
    assert env["CDK_DEFAULT_REGION"] == env["AWS_REGION"] == "eu-west-1"
    assert env["PYTHONPATH"].split(":")[:2] == [str(ROOT / "shared"), str(ROOT)]
    assert "SKYHOP_CDK_NO_BUNDLING" not in env  # a deploy builds its assets

    path = skyhop_home / "remotes.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    profile = remotes.find_control_plane("aws")
    assert profile[0] == "prod"
    assert profile[1].model_dump(exclude_none=True) == {
        "type": "controlplane",
        "cloud": "aws",
        "region": "eu-west-1",
        "stack": "Prod",
        "requests_queue": OUTPUTS["RequestsQueueUrl"],
        "events_queue": OUTPUTS["GatewayEventsQueueUrl"],
        "results_queue": OUTPUTS["ResultsQueueUrl"],
        "manifest": "dynamodb://Prod-Manifest-1A2B?region=eu-west-1",
    }
    out = capsys.readouterr().out
    assert "control-plane profile [prod]" in out and "--on prod" in out

    # --delete destroys the stack and forgets the profile
    assert main(["deploy", "aws", "--region", "eu-west-1", "--stack", "Prod", "--delete",
                 "--name", "prod"]) == 0  # fmt: skip
    argv = cdk.calls[-1][0]
    assert argv[1:4] == ["destroy", "Prod", "--force"]
    assert remotes.load_remotes() == {}


def test_a_failed_cdk_deploy_writes_no_profile(monkeypatch, skyhop_home: Path, capsys) -> None:
    fake = FakeCDK(code=1)

    def deployer(deploy):
        deploy.runner = fake
        return deploy

    monkeypatch.setattr(deploy_cli, "aws_deployer", deployer)
    assert main(["deploy", "aws", "--region", "us-east-1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["skyhop: error: cdk deploy of stack Skyhop failed (exit 1); see above"]
    assert not (skyhop_home / "remotes.toml").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-c", "aws:cdk:x=1"], "-c aws:cdk:x: the CDK reserves 'aws:' context keys"),
        (["-c", "novalue"], "-c 'novalue': expected KEY=VALUE"),
        (["--rules", "/nonexistent/rules.yaml"], "--rules /nonexistent/rules.yaml: no such file"),
        (["--app-dir", "/tmp"], "no CDK app at /tmp"),
    ],
)
def test_bad_input_is_one_line_and_runs_nothing(cdk: FakeCDK, extra, message, capsys) -> None:
    assert main(["deploy", "aws", "--region", "us-east-1", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert cdk.calls == []


def test_no_region_is_one_line(cdk: FakeCDK, monkeypatch, capsys) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    assert main(["deploy", "aws"]) == 2
    assert "give --region (or set AWS_REGION)" in capsys.readouterr().err


def test_dry_run_synthesises_offline_and_writes_nothing(skyhop_home: Path) -> None:
    from tests.fixtures.cli import run_cli

    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": ""}
    result = run_cli("deploy", "aws", "--region", "eu-west-1", "--dry-run", "--json", env=env,
                     timeout=600)  # fmt: skip
    assert result.code == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["resources"]["AWS::SQS::Queue"] >= 4
    assert out["resources"]["AWS::Lambda::Function"] == 4
    assert out["resources"]["AWS::DynamoDB::GlobalTable"] >= 1 or out["resources"].get(
        "AWS::DynamoDB::Table"
    )
    assert {"RequestsQueueUrl", "ManifestTableName"} <= set(out["outputs"])
    profile = out["profile"]["aws"]
    assert profile["cloud"] == "aws" and profile["region"] == "eu-west-1"
    assert not (skyhop_home / "remotes.toml").exists()


def test_what_the_cdk_cli_prints_never_reaches_skyhops_stdout(tmp_path: Path) -> None:
    """The CDK CLI prints notices on its stdout that ``--no-notices`` does not
    silence ("85 feature flags are not configured…" broke ``--dry-run --json``
    on CI's fresh checkout); the real runner sends them to stderr."""
    import subprocess

    script = (
        "import os, sys; from pathlib import Path; from skyhop.deploy.aws import run_cdk; "
        "sys.exit(run_cdk([sys.executable, '-c', 'print(\"85 feature flags are not configured\")'], "
        "Path('.'), os.environ))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "85 feature flags are not configured" in done.stderr
