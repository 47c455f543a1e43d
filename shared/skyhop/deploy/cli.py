"""``skyhop deploy aws|gcp|azure``: deploy (or with ``--delete`` remove) the serverless
control plane, and write (or remove) its control-plane profile in
``$SKYHOP_HOME/remotes.toml`` for ``skyhop cp ... --on``.

    skyhop deploy aws [--region R] [--stack NAME] [--rules rules.yaml] [-c KEY=VALUE ...]
        [--dry-run]

    skyhop deploy gcp --project P --region R --staging-bucket B \\
        [--manifest URI] [--rules rules.yaml] [--bucket B ...]
    skyhop deploy azure --subscription S --resource-group G --location L --app NAME \\
        [--manifest URI] [--rules rules.yaml] [--events-from STORAGE_ACCOUNT_ID ...]

The manifest is the cloud's own: Firestore in the same project on GCP
(firestore://PROJECT/(default)/skyhop-manifest), Table Storage in the function
app's storage account on Azure (aztable://ACCOUNT/skyhopmanifest);
``--manifest dynamodb://TABLE[?region=R]`` keeps it in DynamoDB instead.

AWS is deployed with the CDK app ``infra_cdk`` through the CDK CLI of
``package.json`` (:mod:`skyhop.deploy.aws`). Every target takes ``--name`` for
the profile (default: the target's name).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from skyhop.deploy.report import DeployReport
from skyhop.errors import UsageError, first_line
from skyhop.models import ReplicationConfig, parse_message

if TYPE_CHECKING:
    from skyhop.deploy.package import Target


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``deploy`` to the ``skyhop`` command's subcommands."""
    deploy = subparsers.add_parser(
        "deploy",
        help="deploy the serverless control plane (AWS, GCP or Azure) and write its profile",
        description=__doc__.split("\n\n")[0],
    )
    targets = deploy.add_subparsers(dest="target", required=True, parser_class=type(deploy))

    aws = targets.add_parser("aws", help="the CDK app infra_cdk/ (SQS, DynamoDB, Lambda, EC2)")
    aws.add_argument(
        "--region",
        default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
        help="default $AWS_REGION",
    )
    aws.add_argument("--stack", default="Skyhop", help="stack name (default Skyhop)")
    aws.add_argument("--rules", metavar="FILE", help="replication rules (YAML or JSON)")
    aws.add_argument(
        "-c",
        "--context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="CDK context value (see infra_cdk/README.md; repeatable)",
    )
    aws.add_argument("--app-dir", help="the infra_cdk/ directory of a skyhop checkout")
    aws.add_argument(
        "--dry-run",
        action="store_true",
        help="synthesise and print what would be created (no AWS call, nothing written)",
    )
    aws.add_argument("--delete", action="store_true", help="destroy the stack instead")
    aws.add_argument("--name", help="the profile's name (default aws)")
    aws.add_argument("--json", action="store_true", help="print the result as JSON")
    aws.set_defaults(func=run_aws)

    gcp = targets.add_parser("gcp", help="Cloud Functions (2nd gen) with Pub/Sub and GCS triggers")
    gcp.add_argument("--project", required=True)
    gcp.add_argument("--region", default="us-central1")
    gcp.add_argument("--staging-bucket", required=True, help="GCS bucket for the source archive")
    gcp.add_argument("--bucket", action="append", default=[], help="replicated bucket (repeatable)")
    gcp.add_argument("--prefix", default="skyhop", help="function name prefix")
    gcp.add_argument("--requests-topic", default="skyhop-requests")
    gcp.add_argument("--events-topic", default="skyhop-events")
    gcp.add_argument("--results-topic")
    gcp.add_argument("--service-account")
    _common(gcp)
    gcp.set_defaults(func=run_gcp)

    az = targets.add_parser("azure", help="an Azure Function App (Linux, Consumption plan)")
    az.add_argument("--subscription", default=os.environ.get("AZURE_SUBSCRIPTION_ID"))
    az.add_argument("--resource-group", default="skyhop")
    az.add_argument("--location", required=True)
    az.add_argument("--app", required=True, help="function app name (globally unique)")
    az.add_argument("--plan", help="App Service plan name (default APP-plan)")
    az.add_argument(
        "--storage-connection-string",
        help="the app's AzureWebJobsStorage (default $AZURE_STORAGE_CONNECTION_STRING)",
    )
    az.add_argument(
        "--events-from",
        action="append",
        default=[],
        metavar="STORAGE_ACCOUNT_ID",
        help="send this account's blob events to replication (repeatable)",
    )
    az.add_argument("--requests-queue", default="skyhop-requests")
    az.add_argument("--events-queue", default="skyhop-events")
    az.add_argument("--results-queue")
    _common(az)
    az.set_defaults(func=run_azure)


def run_aws(args: argparse.Namespace) -> int:
    from skyhop.deploy.aws import AwsDeploy

    if not args.region:
        raise UsageError("skyhop deploy aws: give --region (or set AWS_REGION)")
    context: dict[str, str] = {}
    for item in args.context:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"-c {item!r}: expected KEY=VALUE")
        context[key.strip()] = value
    deploy = aws_deployer(
        AwsDeploy(
            region=args.region,
            stack=args.stack,
            rules=Path(args.rules) if args.rules else None,
            context=context,
            app_dir=Path(args.app_dir) if args.app_dir else None,
        )
    )
    name = args.name or "aws"
    if args.dry_run:
        resources, outputs, profile = deploy.dry_run()
        if args.json:
            out = {
                "stack": args.stack,
                "region": args.region,
                "resources": resources,
                "outputs": outputs,
                "profile": {name: profile.model_dump(mode="json", exclude_none=True)},
            }
            print(json.dumps(out, indent=2))
            return 0
        from skyhop import remotes

        print(f"dry run: stack {args.stack} in {args.region} would create:")
        width = max((len(t) for t in resources), default=10)
        for kind, count in resources.items():
            print(f"  {kind:<{width}}  {count}")
        print(f"  {sum(resources.values())} resources; outputs: {', '.join(outputs)}")
        print(f"and write the control-plane profile [{name}] to {remotes.remotes_path()}:")
        print(remotes.dumps({name: profile}), end="")
        print("nothing was deployed or written")
        return 0
    if args.delete:
        deploy.destroy()
        _forget_profile(name)
        print(f"stack {args.stack} destroyed in {args.region}; profile [{name}] removed")
        return 0
    profile = deploy.deploy()
    path = _write_profile(name, profile)
    if args.json:
        print(json.dumps({name: profile.model_dump(mode="json", exclude_none=True)}, indent=2))
        return 0
    print(f"stack {args.stack} deployed in {args.region}; control-plane profile [{name}] in {path}")
    print(f"copy through it with: skyhop cp -r s3://SRC/prefix/ gs://DST/prefix/ --on {name}")
    return 0


def aws_deployer(deploy: Any) -> Any:
    """The AWS deploy (tests replace this to capture its CDK commands)."""
    return deploy


def _write_profile(name: str, profile: Any) -> Path:
    from skyhop import remotes

    return remotes.add_remote(name, profile, replace=True)


def _forget_profile(name: str) -> None:
    from skyhop import remotes
    from skyhop.errors import NotFoundError

    try:
        remotes.remove_remote(name)
    except NotFoundError:
        pass


def profile_of(target: str, config: Any) -> Any:
    """The control-plane profile of a deployed GCP or Azure function app (from the
    settings its functions run with)."""
    from skyhop.remotes import ControlPlaneProfile

    env = config.environment() if target == "gcp" else config.app_settings()
    return ControlPlaneProfile(
        cloud=target,
        requests_queue=env["SKYHOP_REQUESTS_QUEUE"],
        events_queue=env.get("SKYHOP_EVENTS_QUEUE"),
        results_queue=env.get("SKYHOP_RESULTS_QUEUE"),
        manifest=env["SKYHOP_MANIFEST"],
        region=config.region if target == "gcp" else config.location,
        stack=(
            f"{config.project}/{config.prefix}"
            if target == "gcp"
            else f"{config.resource_group}/{config.app_name}"
        ),
    )


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", help="the control-plane profile's name (default: the target)")
    p.add_argument(
        "--manifest",
        help="the functions' manifest (default: the cloud's own, Firestore or Table Storage;"
        " or firestore://PROJECT/DATABASE/COLLECTION, aztable://ACCOUNT/TABLE,"
        " dynamodb://TABLE[?region=R])",
    )
    p.add_argument("--rules", metavar="FILE", help="replication rules (YAML or JSON)")
    p.add_argument(
        "--transfer-location",
        action="append",
        default=[],
        metavar="URI",
        help="a location ad-hoc requests may read and write besides the rules' (gs://B/P/, "
        "az://ACCOUNT/C/, s3://B; gs://* for every bucket the functions may reach; repeatable)",
    )
    p.add_argument(
        "--compute-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument for the gateway compute provider (repeatable)",
    )
    p.add_argument("--functions-dir", help="the functions/ directory of a skyhop checkout")
    p.add_argument("--delete", action="store_true", help="remove the functions instead")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def load_rules(path: str | None) -> ReplicationConfig | None:
    if not path:
        return None
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"cannot read rules {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"rules {path} is not YAML or JSON: {first_line(exc)}") from None
    try:
        return parse_message(ReplicationConfig, json.dumps(raw, default=str))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "rules"
        msg = first["msg"].removeprefix("Value error, ")
        raise UsageError(f"rules {path}: {where}: {msg}") from None


def compute_options(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--compute-option {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _manifest(args: argparse.Namespace) -> str | None:
    """``--manifest`` checked (a malformed URI fails here, before anything is
    deployed), or None: the deployment's default, the cloud's own."""
    if not args.manifest:
        return None
    uri = str(args.manifest)
    scheme = uri.partition("://")[0]
    if scheme == "firestore":
        from skyhop.state.firestore import parse_firestore

        parse_firestore(uri)
    elif scheme == "aztable":
        from skyhop.state.azure_tables import parse_aztable

        parse_aztable(uri)
    elif scheme not in ("dynamodb", "sqlite"):
        raise UsageError(
            f"--manifest {uri!r}: use firestore://, aztable://, dynamodb:// or sqlite://"
        )
    return uri


FLAGS = {
    "app_name": "--app",
    "plan_name": "--plan",
    "subscription_id": "--subscription",
    "event_sources": "--events-from",
    "buckets": "--bucket",
    "compute_options": "--compute-option",
    "transfer_locations": "--transfer-location",
}


def _config(cls: type, values: dict[str, Any]) -> Any:
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "deploy"
        where = FLAGS.get(field, "--" + field.replace("_", "-"))
        raise UsageError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None


def gcp_deployer(config: Any) -> Any:
    """The GCP deployer for ``config`` (tests replace this to point it at fakes)."""
    from skyhop.deploy.gcp import GCPDeployer

    return GCPDeployer(config)


def azure_deployer(config: Any) -> Any:
    """The Azure deployer for ``config`` (tests replace this to point it at fakes)."""
    from skyhop.deploy.azure import AzureDeployer

    return AzureDeployer(config)


def run_gcp(args: argparse.Namespace) -> int:
    from skyhop.deploy.gcp import GCPDeployConfig

    config = _config(
        GCPDeployConfig,
        {
            "project": args.project,
            "region": args.region,
            "staging_bucket": args.staging_bucket,
            "manifest": _manifest(args),
            "prefix": args.prefix,
            "buckets": args.bucket,
            "rules": load_rules(args.rules),
            "transfer_locations": args.transfer_location,
            "requests_topic": args.requests_topic,
            "events_topic": args.events_topic,
            "results_topic": args.results_topic,
            "compute_options": compute_options(args.compute_option),
            "service_account": args.service_account,
        },
    )
    return _run(args, gcp_deployer(config), "gcp", config)


def run_azure(args: argparse.Namespace) -> int:
    from skyhop.deploy.azure import AzureDeployConfig

    if not args.subscription:
        raise UsageError("--subscription is required (or set AZURE_SUBSCRIPTION_ID)")
    conn = args.storage_connection_string or os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if not conn:
        raise UsageError(
            "--storage-connection-string is required (or set AZURE_STORAGE_CONNECTION_STRING)"
        )
    config = _config(
        AzureDeployConfig,
        {
            "subscription_id": args.subscription,
            "resource_group": args.resource_group,
            "location": args.location,
            "app_name": args.app,
            "plan_name": args.plan,
            "storage_connection_string": conn,
            "manifest": _manifest(args),
            "rules": load_rules(args.rules),
            "transfer_locations": args.transfer_location,
            "requests_queue": args.requests_queue,
            "events_queue": args.events_queue,
            "results_queue": args.results_queue,
            "compute_options": compute_options(args.compute_option),
            "event_sources": args.events_from,
        },
    )
    return _run(args, azure_deployer(config), "azure", config)


def _run(args: argparse.Namespace, deployer: Any, target: Target, config: Any) -> int:
    from skyhop.deploy.package import build_source

    name = args.name or target
    if args.delete:
        report: DeployReport = deployer.destroy()
        _forget_profile(name)
    else:
        report = deployer.deploy(build_source(target, args.functions_dir))
        path = _write_profile(name, profile_of(target, config))
        report.notes.append(f"control-plane profile [{name}] written to {path} (--on {name})")
    if args.json:
        print(report.model_dump_json(indent=2))
        return 0
    if report.source:
        print(f"source: {report.source}")
    width = max((len(f.function_id) for f in report.functions), default=8)
    for f in report.functions:
        print(f"{f.function_id:<{width}}  {f.action:<8}  {f.url or ''}".rstrip())
    for note in report.notes:
        print(f"note: {note}")
    return 0
