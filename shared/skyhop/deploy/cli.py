"""``skyhop deploy gcp|azure``: deploy (or with ``--delete`` remove) the serverless control plane.

    skyhop deploy gcp --project P --region R --staging-bucket B --manifest dynamodb://T \\
        [--rules rules.yaml] [--bucket B ...]
    skyhop deploy azure --subscription S --resource-group G --location L --app NAME \\
        --manifest dynamodb://T [--rules rules.yaml] [--events-from STORAGE_ACCOUNT_ID ...]

AWS is deployed with ``infra_cdk`` (``cdk deploy``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from skyhop.deploy.report import DeployReport
from skyhop.errors import UsageError
from skyhop.models import ReplicationConfig


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``deploy`` to the ``skyhop`` command's subcommands."""
    deploy = subparsers.add_parser(
        "deploy",
        help="deploy the serverless control plane to GCP or Azure functions",
        description=__doc__.split("\n\n")[0],
    )
    targets = deploy.add_subparsers(dest="target", required=True, parser_class=type(deploy))

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


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", help="the functions' manifest: dynamodb://TABLE[?region=R]")
    p.add_argument("--rules", metavar="FILE", help="replication rules (YAML or JSON)")
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
        raise UsageError(f"rules {path} is not YAML or JSON: {str(exc).splitlines()[0]}") from None
    try:
        return ReplicationConfig.model_validate(raw)
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


def _manifest(args: argparse.Namespace) -> str:
    if args.manifest:
        return str(args.manifest)
    if args.delete:
        return "unused://"
    raise UsageError("--manifest is required: the functions' shared manifest (dynamodb://TABLE)")


FLAGS = {
    "app_name": "--app",
    "plan_name": "--plan",
    "subscription_id": "--subscription",
    "event_sources": "--events-from",
    "buckets": "--bucket",
    "compute_options": "--compute-option",
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
            "requests_topic": args.requests_topic,
            "events_topic": args.events_topic,
            "results_topic": args.results_topic,
            "compute_options": compute_options(args.compute_option),
            "service_account": args.service_account,
        },
    )
    return _run(args, gcp_deployer(config), "gcp")


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
            "requests_queue": args.requests_queue,
            "events_queue": args.events_queue,
            "results_queue": args.results_queue,
            "compute_options": compute_options(args.compute_option),
            "event_sources": args.events_from,
        },
    )
    return _run(args, azure_deployer(config), "azure")


def _run(args: argparse.Namespace, deployer: Any, target: str) -> int:
    from skyhop.deploy.package import build_source

    if args.delete:
        report: DeployReport = deployer.destroy()
    else:
        report = deployer.deploy(build_source(target, args.functions_dir))  # type: ignore[arg-type]
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
