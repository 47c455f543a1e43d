"""Named remotes in ``$SKYHOP_HOME/remotes.toml``: deployed control planes and
storage endpoints with their own credentials, one TOML table per name.

A platform team deploys the control plane once (``skyhop deploy aws``) and
hands the resulting table to its users, who add it with
``skyhop remote add NAME --from FILE``; ``skyhop cp ... --on NAME`` then runs
jobs there. The file::

    [aws]
    type = "controlplane"
    cloud = "aws"
    region = "us-east-1"
    stack = "Skyhop"
    requests_queue = "https://sqs.us-east-1.amazonaws.com/123456789012/Skyhop-Requests"
    events_queue = "https://sqs.us-east-1.amazonaws.com/123456789012/Skyhop-GatewayEvents"
    results_queue = "https://sqs.us-east-1.amazonaws.com/123456789012/Skyhop-Results"
    manifest = "dynamodb://Skyhop-Manifest?region=us-east-1"

Every table is one member of the :data:`Remote` union, told apart by its
``type`` (a pydantic discriminated union): a new kind of remote is one more
model with its own ``type`` literal, added to the union; loading, saving and
the ``skyhop remote`` verbs work for it unchanged.

Queue fields are URIs :func:`skyhop.queues.base.open_queue` takes; ``manifest``
is a URI :func:`skyhop.state.open_manifest` takes. The file is written
atomically with mode 0600 (it names the deployment's resources; storage
remotes will hold credentials) and read with :mod:`tomllib`; nothing reads it
at import time.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from skyhop.config import skyhop_home
from skyhop.errors import NotFoundError, UsageError, first_line

FILE_NAME = "remotes.toml"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CLOUDS = ("aws", "gcp", "azure")

Cloud = Literal["aws", "gcp", "azure"]


class _Remote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(None, description="a note for people (shown by `remote list`)")


class ControlPlaneProfile(_Remote):
    """A deployed serverless control plane: where requests go, where jobs are kept."""

    type: Literal["controlplane"] = "controlplane"
    cloud: Cloud
    requests_queue: str = Field(description="queue URI the submit function reads requests from")
    manifest: str = Field(description="manifest URI: dynamodb://TABLE?region=R, ...")
    events_queue: str | None = Field(None, description="queue URI gateways post events to")
    results_queue: str | None = Field(None, description="queue URI reports are published to")
    region: str | None = None
    stack: str | None = Field(None, description="stack, project or resource group deployed")
    compute: str | None = Field(
        None,
        description="where the deployment's gateways run when not on `cloud`'s VMs: 'local' "
        "for a control plane whose gateways are processes on this machine (a test or "
        "on-premises deployment); such a profile may copy local paths",
    )

    @field_validator("requests_queue", "events_queue", "results_queue", "manifest")
    @classmethod
    def _uri(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError(f"{value!r} is not a URI (scheme://...)")
        return value

    @property
    def gateways_here(self) -> bool:
        """Whether the deployment's gateways run on this machine (so see its files)."""
        return self.compute == "local"


# ---------------------------------------------------------------- storage remotes
#
# A storage remote names an endpoint and where its credentials come from, so that
# each side of a copy has its own (two AWS accounts, MinIO into AWS, two Azure
# accounts). The file holds no secret of its own: key pairs, connection strings and
# SAS tokens are read from the environment variables it names, profiles from the
# AWS config, service accounts from their file. A location uses a remote as
# ``NAME:bucket/prefix`` (Azure: ``NAME:container/prefix``) or with
# ``?remote=NAME`` after an ``s3://``, ``gs://`` or ``az://`` URI;
# :mod:`skyhop.store_access` turns a remote into credentials.

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _StorageRemote(_Remote):
    endpoint: str | None = Field(
        None, description="the service's URL (MinIO, Ceph, R2, an emulator); None: the cloud's own"
    )
    planner_region: str | None = Field(
        None,
        description="the region the planner knows this endpoint as: a profiled one "
        "('aws:us-east-1'), or your own ('onprem:dc1', priced with the two fields below)",
    )
    throughput_gbps: float | None = Field(
        None, gt=0, description="your own region: Gbit/s one gateway moves to or from it"
    )
    egress_usd_per_gb: float = Field(
        0.0, ge=0, description="your own region: what reading out of it costs, $ per GB"
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s):// URL")
        return value.rstrip("/") if value else value

    @field_validator("planner_region")
    @classmethod
    def _planner_region(cls, value: str | None) -> str | None:
        if value is not None and not re.match(
            r"^[a-z][a-z0-9-]*:[A-Za-z0-9][A-Za-z0-9_.-]*$", value
        ):
            raise ValueError(f"{value!r} is not a region name such as 'onprem:dc1'")
        return value

    def _env_names(self, *names: str | None) -> None:
        for name in names:
            if name is not None and not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")


class S3Remote(_StorageRemote):
    """S3 or an S3-compatible service (MinIO, Ceph, Cloudflare R2, Wasabi, Backblaze B2).

    Credentials, in order: ``role_arn`` assumed with the base credentials (a
    profile, a key pair from the environment, else the default chain); a
    ``profile``; a key pair from the environment variables named by
    ``access_key_env``/``secret_key_env``; else boto3's default chain."""

    type: Literal["s3"] = "s3"
    region: str | None = Field(None, description="signing region (default us-east-1)")
    profile: str | None = Field(None, description="a profile of the AWS config files")
    access_key_env: str | None = Field(None, description="env variable holding the access key id")
    secret_key_env: str | None = Field(None, description="env variable holding the secret key")
    session_token_env: str | None = None
    role_arn: str | None = Field(None, description="a role to assume (another account's)")
    external_id: str | None = None
    session_name: str = Field("skyhop", min_length=2, max_length=64)
    duration_seconds: int = Field(
        3600, ge=900, le=43200, description="how long the assumed role's credentials last"
    )
    sts_endpoint: str | None = Field(None, description="STS URL (default: endpoint, if any)")
    path_style: bool | None = Field(
        None,
        description="true: the bucket in the path (most S3-compatible stores); false: in the "
        "host name (virtual-hosted, which some providers require); unset: botocore's choice "
        "(path-style for a custom endpoint, virtual-hosted on AWS)",
    )
    checksums: bool = Field(
        True,
        description="false: send no flexible checksums (CRC32 headers on PutObject and "
        "UploadPart), which some S3-compatible stores refuse",
    )

    @model_validator(mode="after")
    def _one_source(self) -> S3Remote:
        self._env_names(self.access_key_env, self.secret_key_env, self.session_token_env)
        if (self.access_key_env is None) != (self.secret_key_env is None):
            raise ValueError("give access_key_env and secret_key_env together")
        if self.profile is not None and self.access_key_env is not None:
            raise ValueError("give a profile or a key pair from the environment, not both")
        return self


class GCSRemote(_StorageRemote):
    """Google Cloud Storage (or an emulator): a service-account key file, anonymous
    access (emulators), else Application Default Credentials."""

    type: Literal["gcs"] = "gcs"
    project: str | None = None
    service_account_file: str | None = Field(None, description="path of a service-account key")
    anonymous: bool = Field(False, description="no credentials at all (an emulator)")

    @model_validator(mode="after")
    def _one_source(self) -> GCSRemote:
        if self.anonymous and self.service_account_file:
            raise ValueError("give a service account file or anonymous, not both")
        return self


class AzureRemote(_StorageRemote):
    """One Azure storage account: a connection string, an account key or a SAS token
    from the environment variable named, else azure-identity's default credential."""

    type: Literal["azure"] = "azure"
    account: str = Field(pattern=r"^[a-z0-9]{3,24}$", description="the storage account")
    connection_string_env: str | None = None
    account_key_env: str | None = None
    sas_token_env: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> AzureRemote:
        given = [
            n for n in (self.connection_string_env, self.account_key_env, self.sas_token_env) if n
        ]
        self._env_names(*given)
        if len(given) > 1:
            raise ValueError("give one of connection_string_env, account_key_env or sas_token_env")
        return self


StorageRemote = S3Remote | GCSRemote | AzureRemote
STORAGE_TYPES = ("s3", "gcs", "azure")

#: Every kind of remote, by its ``type``.
Remote = Annotated[
    ControlPlaneProfile | S3Remote | GCSRemote | AzureRemote, Field(discriminator="type")
]

_REMOTE: TypeAdapter[Remote] = TypeAdapter(Remote)


def remotes_path() -> Path:
    """``$SKYHOP_HOME/remotes.toml``."""
    return skyhop_home() / FILE_NAME


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise UsageError(
            f"bad remote name {name!r}: letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 64 characters"
        )
    return name


def parse_remote(name: str, table: Any, *, where: str = FILE_NAME) -> Remote:
    """One table as its model; a UsageError naming the table and field otherwise."""
    if not isinstance(table, dict):
        raise UsageError(f"{where}: [{name}] is not a table")
    try:
        return _REMOTE.validate_python(table)
    except ValidationError as exc:
        first = exc.errors()[0]
        kinds = ("controlplane", *STORAGE_TYPES)
        field = ".".join(str(p) for p in first["loc"] if p not in kinds)
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "union_tag_invalid" or first["type"] == "union_tag_not_found":
            msg = "type must be one of: " + ", ".join(kinds)
            field = "type"
        raise UsageError(f"{where}: [{name}] {field or 'table'}: {msg}") from None


def read_file(path: Path) -> dict[str, Remote]:
    """Every table of a remotes file (ours or one a platform team handed over)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"no such file: {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not TOML: {first_line(exc)}") from None
    out: dict[str, Remote] = {}
    for name, table in raw.items():
        check_name(name)
        out[name] = parse_remote(name, table, where=str(path))
    return out


def load_remotes() -> dict[str, Remote]:
    """The remotes of ``$SKYHOP_HOME/remotes.toml`` by name ({} when there is none)."""
    path = remotes_path()
    if not path.exists():
        return {}
    return read_file(path)


def dumps(remotes: dict[str, Remote]) -> str:
    """The TOML text of ``remotes`` (unset fields left out)."""
    import tomli_w

    return tomli_w.dumps(
        {name: r.model_dump(mode="json", exclude_none=True) for name, r in remotes.items()}
    )


def save_remotes(remotes: dict[str, Remote]) -> Path:
    """Write the file atomically, mode 0600."""
    path = remotes_path()
    text = dumps(remotes)
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o600)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def get_remote(name: str) -> Remote:
    remotes = load_remotes()
    found = remotes.get(name)
    if found is None:
        known = ", ".join(sorted(remotes)) or "none yet"
        raise NotFoundError(f"no remote {name!r} (known: {known}); see `skyhop remote list`")
    return found


def add_remote(name: str, remote: Remote, *, replace: bool = False) -> Path:
    """Add (or with ``replace``, overwrite) one remote."""
    check_name(name)
    remotes = load_remotes()
    if name in remotes and not replace:
        raise UsageError(f"remote {name!r} exists already (use --replace to overwrite it)")
    remotes[name] = remote
    return save_remotes(remotes)


def remove_remote(name: str) -> Path:
    remotes = load_remotes()
    if name not in remotes:
        raise NotFoundError(f"no remote {name!r}; see `skyhop remote list`")
    del remotes[name]
    return save_remotes(remotes)


def storage_remotes() -> dict[str, StorageRemote]:
    """The storage remotes by name."""
    return {
        n: r for n, r in load_remotes().items() if isinstance(r, S3Remote | GCSRemote | AzureRemote)
    }


def get_storage_remote(name: str) -> StorageRemote:
    """The storage remote called ``name``; the error says what exists."""
    found = load_remotes().get(name)
    if isinstance(found, S3Remote | GCSRemote | AzureRemote):
        return found
    if found is not None:
        raise UsageError(f"remote {name!r} is a {found.type} remote, not a storage remote")
    known = ", ".join(sorted(storage_remotes())) or "none yet"
    raise NotFoundError(
        f"no storage remote {name!r} (known: {known}); add one with "
        "`skyhop remote add NAME --type s3|gcs|azure ...`"
    )


def control_planes() -> dict[str, ControlPlaneProfile]:
    """The control-plane profiles by name."""
    return {n: r for n, r in load_remotes().items() if isinstance(r, ControlPlaneProfile)}


def find_control_plane(name: str) -> tuple[str, ControlPlaneProfile]:
    """``--on NAME``: the profile called NAME, else, when NAME is a cloud, the one
    profile of that cloud. The error says how to deploy or add one."""
    planes = control_planes()
    if name in planes:
        return name, planes[name]
    remotes = load_remotes()
    if name in remotes:
        raise UsageError(f"remote {name!r} is a {remotes[name].type} remote, not a control plane")
    if name in CLOUDS:
        of_cloud = {n: p for n, p in planes.items() if p.cloud == name}
        if len(of_cloud) == 1:
            return next(iter(of_cloud.items()))
        if len(of_cloud) > 1:
            raise UsageError(
                f"several {name} control planes ({', '.join(sorted(of_cloud))}): "
                "name one with --on NAME"
            )
        raise NotFoundError(
            f"no {name} control plane: deploy one with `skyhop deploy {name}`, "
            "or add a profile with `skyhop remote add NAME --from FILE`"
        )
    known = ", ".join(sorted(planes)) or "none yet"
    raise NotFoundError(
        f"no control plane {name!r} (known: {known}): deploy one with "
        "`skyhop deploy aws|gcp|azure`, or add it with `skyhop remote add`"
    )
