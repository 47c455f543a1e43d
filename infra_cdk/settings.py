"""The CDK context values the app understands, validated by one pydantic model.

Context comes from ``cdk.json`` (typed JSON) or from ``cdk deploy -c key=value``
(always a string), so lists also accept a comma-separated string and booleans
accept ``true``/``false``. An unknown camelCase key is an error naming the known
ones, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from skyhop.compute.ec2 import DEFAULT_INSTANCE_TYPE
from skyhop.errors import UsageError

_OUR_KEY = re.compile(r"^[a-z][A-Za-z0-9]+$")
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
_LAYER_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:\d{12}:layer:[A-Za-z0-9_-]+:\d+$")
# The retention periods CloudWatch Logs accepts.
RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827,
                  2192, 2557, 2922, 3288, 3653)  # fmt: skip


# A gateway's control queue is ``PREFIX-JOB--GATEWAY`` and at most 80 characters
# (skyhop.queues.base.control_queue_name): a job id takes 18, the separators 3 and
# a gateway's part (or its hash) 10, which leaves at most 49 for the prefix.
MAX_CONTROL_QUEUE_PREFIX = 44


class SettingsError(UsageError):
    """A context value that is missing, unknown or malformed."""


def control_queue_prefix(stack_name: str) -> str:
    """The name prefix of the per-gateway control queues a stack's functions create
    (``skyhop-ctl`` for the default stack ``Skyhop``, skyhop's own default): one per
    stack, so one stack's reaper never deletes another stack's queues."""
    return f"{stack_name.lower()}-ctl"


class AppSettings(BaseModel):
    """Every context value of the skyhop CDK app (camelCase in ``cdk.json`` and ``-c``)."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )

    stack_name: str = Field("Skyhop", pattern=r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
    rules_file: Path | None = Field(None, description="YAML or JSON replication rules")
    notification_mode: Literal["eventbridge", "sqs"] = "eventbridge"
    transfer_buckets: list[str] = Field(
        default_factory=list,
        description="S3 buckets ad-hoc transfers may read and write, besides the rules' buckets",
    )
    gateway_instance_type: str = Field(
        DEFAULT_INSTANCE_TYPE,
        pattern=r"^[a-z][a-z0-9-]*\.[a-z0-9]+$",
        description="the planner's default profile prices the compute provider's default",
    )
    gateway_regions: list[str] = Field(
        default_factory=list,
        description="regions gateways may run in, for teardown and the reaper (and the stack's)",
    )
    gateway_ami_id: str | None = Field(None, pattern=r"^ami-[0-9a-f]{8,17}$")
    gateway_volume_gib: int = Field(16, ge=8, le=1024)
    lambda_architecture: Literal["arm64", "x86_64"] = "arm64"
    dependencies_layer_arn: str | None = Field(None, pattern=_LAYER_ARN.pattern)
    wheelhouse: Path | None = None
    powertools_version: str = Field("latest", pattern=r"^(latest|\d+\.\d+\.\d+)$")
    powertools_layer_arn: str | None = Field(None, pattern=_LAYER_ARN.pattern)
    alarm_email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    retain_data: bool = True
    log_retention_days: int = 30

    @field_validator("transfer_buckets", "gateway_regions", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("transfer_buckets")
    @classmethod
    def _bucket_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _S3_BUCKET.match(name):
                raise ValueError(f"{name!r} is not an S3 bucket name")
        return value

    @field_validator("gateway_regions")
    @classmethod
    def _region_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _REGION.match(name.removeprefix("aws:")):
                raise ValueError(f"{name!r} is not an AWS region name")
        return value

    @field_validator("stack_name")
    @classmethod
    def _names_control_queues(cls, value: str) -> str:
        prefix = control_queue_prefix(value)
        if len(prefix) > MAX_CONTROL_QUEUE_PREFIX:
            longest = MAX_CONTROL_QUEUE_PREFIX - len(prefix) + len(value)
            raise ValueError(
                f"at most {longest} characters: it names the control queues ({prefix!r}-...)"
            )
        return value

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in RETENTION_DAYS:
            raise ValueError(f"must be one of {', '.join(map(str, RETENTION_DAYS))} days")
        return value

    @field_validator("rules_file", "wheelhouse", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value in ("", None) else value


def known_keys() -> list[str]:
    """The context keys of :class:`AppSettings`, as written in ``cdk.json``."""
    return sorted(to_camel(name) for name in AppSettings.model_fields)


def settings_from_context(context: Mapping[str, Any]) -> AppSettings:
    """Build :class:`AppSettings` from the app's whole context; raise :class:`SettingsError`.

    Keys that are not ours (CDK feature flags ``@aws-cdk/...``, ``aws:cdk:...``,
    lookup caches) are ignored; a camelCase key that is not a setting is an error.
    """
    known = set(known_keys())
    ours: dict[str, Any] = {}
    for key, value in context.items():
        if not _OUR_KEY.match(key):
            continue
        if key not in known:
            raise SettingsError(
                f"unknown context value {key!r}; known values: {', '.join(sorted(known))}"
            )
        ours[key] = value
    try:
        return AppSettings.model_validate(ours)
    except ValidationError as exc:
        faults = []
        for err in exc.errors(include_url=False):
            key = ".".join(str(p) for p in err["loc"])
            faults.append(f"{key}: {str(err['msg']).removeprefix('Value error, ')}")
        raise SettingsError("context value " + "; ".join(faults)) from None
