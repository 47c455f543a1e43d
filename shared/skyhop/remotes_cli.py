"""``skyhop remote list|show|add|remove``: the named remotes of ``$SKYHOP_HOME/remotes.toml``.

    skyhop remote list [--json]
    skyhop remote show NAME [--json]        # TOML by default: hand it to someone
    skyhop remote add NAME --type controlplane --cloud aws --requests-queue URI \\
        --manifest URI [--events-queue URI] [--results-queue URI] [--region R] [--stack S]
    skyhop remote add minio --type s3 --endpoint https://minio.example:9000 --path-style true \\
        --access-key-env MINIO_KEY --secret-key-env MINIO_SECRET
    skyhop remote add [NAME] --from FILE    # a table (or every table) of a file
    skyhop remote remove NAME

Fields of any remote type can be given as ``--set KEY=VALUE`` (repeatable).
Importing only argparse at start-up: the models load when a verb runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

#: flags for the control-plane profile's fields (``--set`` reaches every field)
FIELD_FLAGS = (
    ("cloud", "aws, gcp or azure"),
    ("requests_queue", "queue URI the control plane reads requests from"),
    ("events_queue", "queue URI its gateways post events to"),
    ("results_queue", "queue URI it publishes reports to"),
    ("manifest", "manifest URI (dynamodb://TABLE?region=R, ...)"),
    ("region", None),
    ("stack", "stack, project or resource group"),
    ("compute", "'local' when its gateways run on this machine (tests, on-premises)"),
    ("description", "a note for people"),
    # storage remotes (s3, gcs, azure)
    ("endpoint", "storage: the service's URL (MinIO, Ceph, R2, an emulator)"),
    ("account", "azure: the storage account"),
    ("profile", "s3: a profile of the AWS config files"),
    ("access_key_env", "s3: env variable holding the access key id"),
    ("secret_key_env", "s3: env variable holding the secret access key"),
    ("role_arn", "s3: a role to assume (another account's)"),
    ("path_style", "s3: true for path-style addressing (most S3-compatible stores)"),
    ("checksums", "s3: false to send no flexible checksums (stores that refuse them)"),
    ("account_key_env", "azure: env variable holding the account key"),
    ("connection_string_env", "azure: env variable holding a connection string"),
    ("sas_token_env", "azure: env variable holding a SAS token"),
    ("service_account_file", "gcs: a service-account key file"),
    ("planner_region", "storage: the region the planner knows it as ('onprem:dc1')"),
    ("throughput_gbps", "storage, your own region: Gbit/s one gateway moves to/from it"),
    ("egress_usd_per_gb", "storage, your own region: $ per GB read out of it"),
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    remote = subparsers.add_parser(
        "remote",
        help="manage named remotes (control planes, storage endpoints) in "
        "$SKYHOP_HOME/remotes.toml",
        description="Profiles of deployed control planes and storage endpoints with their "
        "own credentials, one TOML table per name, so a platform team can hand one file to "
        "its users.",
    )
    verbs = remote.add_subparsers(dest="verb", required=True, parser_class=type(remote))
    listing = verbs.add_parser("list", help="list remotes")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    show = verbs.add_parser("show", help="print one remote as TOML (or JSON)")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)

    add = verbs.add_parser("add", help="add a remote from flags or from a file")
    add.add_argument("name", nargs="?", help="the remote's name (with --from: the table to take)")
    add.add_argument("--from", dest="from_file", metavar="FILE", help="a remotes TOML file")
    add.add_argument("--type", default=None, help="controlplane (default), s3, gcs or azure")
    for field, text in FIELD_FLAGS:
        add.add_argument("--" + field.replace("_", "-"), dest=field, default=None, help=text)
    add.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any field (repeatable)"
    )
    add.add_argument("--replace", action="store_true", help="overwrite a remote of that name")
    add.set_defaults(func=cmd_add)

    remove = verbs.add_parser("remove", help="forget a remote (nothing is deleted in the cloud)")
    remove.add_argument("name")
    remove.set_defaults(func=cmd_remove)


def cmd_list(args: argparse.Namespace) -> int:
    from skyhop import remotes

    found = remotes.load_remotes()
    if args.json:
        out = {n: r.model_dump(mode="json", exclude_none=True) for n, r in found.items()}
        print(json.dumps(out, indent=2))
        return 0
    if not found:
        print(
            "no remotes yet: `skyhop deploy aws|gcp|azure` writes one, "
            "`skyhop remote add NAME --from FILE` adds one",
            file=sys.stderr,
        )
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"skyhop remotes ({remotes.remotes_path()})")
    for col in ("name", "type", "cloud / endpoint", "region", "stack", "description"):
        table.add_column(col)
    for name, r in sorted(found.items()):
        data = r.model_dump(mode="json")
        table.add_row(
            name,
            r.type,
            str(data.get("cloud") or data.get("endpoint") or data.get("account") or ""),
            str(data.get("region") or ""),
            str(data.get("stack") or ""),
            str(data.get("description") or ""),
        )
    Console().print(table)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from skyhop import remotes

    remote = remotes.get_remote(args.name)
    if args.json:
        print(json.dumps(remote.model_dump(mode="json", exclude_none=True), indent=2))
    else:
        print(remotes.dumps({args.name: remote}), end="")
    return 0


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def cmd_add(args: argparse.Namespace) -> int:
    from skyhop import remotes
    from skyhop.errors import UsageError

    fields = {f: getattr(args, f) for f, _ in FIELD_FLAGS if getattr(args, f) is not None}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected KEY=VALUE")
        fields[key.strip().replace("-", "_")] = _value(value)
    if args.from_file:
        from pathlib import Path

        if fields or args.type:
            raise UsageError("--from takes the remote from the file: give no field flags with it")
        tables = remotes.read_file(Path(args.from_file))
        if args.name:
            if args.name not in tables:
                have = ", ".join(sorted(tables)) or "none"
                raise UsageError(f"{args.from_file} has no table [{args.name}] (it has: {have})")
            tables = {args.name: tables[args.name]}
        if not tables:
            raise UsageError(f"{args.from_file} holds no remotes")
    else:
        if not args.name:
            raise UsageError("skyhop remote add: give NAME (or --from FILE)")
        remotes.check_name(args.name)
        table = {"type": args.type or "controlplane", **fields}
        tables = {args.name: remotes.parse_remote(args.name, table, where="skyhop remote add")}
    path = None
    existing = remotes.load_remotes()
    if not args.replace:
        clash = sorted(set(tables) & set(existing))
        if clash:
            raise UsageError(f"remote {clash[0]!r} exists already (use --replace to overwrite it)")
    existing.update(tables)
    path = remotes.save_remotes(existing)
    for name, remote in tables.items():
        print(f"added remote {name} ({remote.type}) to {path}", file=sys.stderr)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from skyhop import remotes

    path = remotes.remove_remote(args.name)
    print(f"removed remote {args.name} from {path}", file=sys.stderr)
    return 0
