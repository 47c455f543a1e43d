"""What the AWS Lambda functions share: the Powertools logger, metrics and tracer,
the idempotency store, and the translation of ``infra_cdk``'s environment into the
settings of :mod:`functions.common` (which builds the control plane and settles
messages the same way for every cloud).

``infra_cdk`` sets (see ``infra_cdk/stack.py``)::

    SKYHOP_TABLE                          manifest table   -> SKYHOP_MANIFEST=dynamodb://TABLE
    SKYHOP_IDEMPOTENCY_TABLE              Powertools idempotency records (key ``id``)
    SKYHOP_REQUESTS_QUEUE_URL             -> SKYHOP_REQUESTS_QUEUE
    SKYHOP_EVENTS_QUEUE_URL               -> SKYHOP_EVENTS_QUEUE (gateways post events there)
    SKYHOP_RESULTS_QUEUE_URL              -> SKYHOP_RESULTS_QUEUE
    SKYHOP_REGIONS                        regions gateways may run in
    SKYHOP_KMS_KEY_ID, SKYHOP_LAUNCH_TEMPLATE_NAME,
    SKYHOP_GATEWAY_{SOURCE,RELAY,DESTINATION}_PROFILE_ARN (one identity per gateway role),
    SKYHOP_GATEWAY_DESTINATION_ROLE_ARN, SKYHOP_GATEWAY_WHEEL (the wheel asset: bucket,
    key, sha256, filename, requirements)
                                          -> SKYHOP_COMPUTE=aws, SKYHOP_COMPUTE_OPTIONS
                                             (EC2ComputeProvider's keyword arguments)
    SKYHOP_RULES                          replication rules (bucket_events)
    SKYHOP_CONTROL_QUEUES                 per-gateway control queues; default ``sqs://skyhop-ctl``
                                          with EC2 gateways (the functions cannot reach a
                                          gateway's control port: no fixed egress address)

A variable of :mod:`functions.common` that is already set wins, so a deployment
(or a test) can name ``SKYHOP_COMPUTE=local`` or another manifest directly.

With ``SKYHOP_KMS_KEY_ID`` set, each job's data key reaches its gateways wrapped
with that KMS key under the job's encryption context
(:class:`skyhop.crypto.kms.KMSKeyWrapper`), never in the clear.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
)

from functions import common as shared
from functions.common import ConfigError
from skyhop.models import Job

SERVICE = "skyhop"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", SERVICE))
tracer = Tracer(service=SERVICE)

IDEMPOTENCY_TABLE = "SKYHOP_IDEMPOTENCY_TABLE"
KMS_KEY = "SKYHOP_KMS_KEY_ID"
CONTROL_QUEUES = "sqs://skyhop-ctl"
ROLES = ("source", "relay", "destination")


def translated_env(env: Mapping[str, str]) -> dict[str, str]:
    """The :mod:`functions.common` variables ``infra_cdk``'s variables imply."""
    out: dict[str, str] = {}
    if env.get("SKYHOP_TABLE"):
        out["SKYHOP_MANIFEST"] = f"dynamodb://{env['SKYHOP_TABLE']}"
    for cdk, name in (
        ("SKYHOP_EVENTS_QUEUE_URL", "SKYHOP_EVENTS_QUEUE"),
        ("SKYHOP_REQUESTS_QUEUE_URL", "SKYHOP_REQUESTS_QUEUE"),
        ("SKYHOP_RESULTS_QUEUE_URL", "SKYHOP_RESULTS_QUEUE"),
    ):
        if env.get(cdk):
            out[name] = env[cdk]
    compute = env.get("SKYHOP_COMPUTE") or "aws"
    out["SKYHOP_COMPUTE"] = compute
    if compute == "aws":
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        options: dict[str, Any] = {}
        if env.get("SKYHOP_LAUNCH_TEMPLATE_NAME") and region:
            options["launch_templates"] = {region: env["SKYHOP_LAUNCH_TEMPLATE_NAME"]}
        # each gateway role its own identity (a relay's has no storage access at all)
        profiles = {r: env.get(f"SKYHOP_GATEWAY_{r.upper()}_PROFILE_ARN", "") for r in ROLES}
        if any(profiles.values()):
            missing = sorted(r for r, p in profiles.items() if not p)
            if missing:
                raise ConfigError(
                    f"SKYHOP_GATEWAY_{missing[0].upper()}_PROFILE_ARN is not set: every gateway "
                    "role needs its own instance profile"
                )
            options["instance_profiles"] = profiles
        if env.get("SKYHOP_GATEWAY_DESTINATION_ROLE_ARN"):
            # only destinations receive a wrapped key, so only their role gets a KMS grant
            options["grantee_roles"] = {"destination": env["SKYHOP_GATEWAY_DESTINATION_ROLE_ARN"]}
        if env.get("SKYHOP_KMS_KEY_ID"):
            options["kms_keys"] = [env["SKYHOP_KMS_KEY_ID"]]
        if env.get("SKYHOP_GATEWAY_WHEEL"):
            # the deployment's own skyhop wheel (an S3 asset), which gateways install by hash
            options["wheel"] = json.loads(env["SKYHOP_GATEWAY_WHEEL"])
        if env.get("SKYHOP_WAIT_READY", "").lower() in ("0", "false", "no"):
            options["wait_ready"] = False
        out["SKYHOP_COMPUTE_OPTIONS"] = json.dumps(options, sort_keys=True)
        out["SKYHOP_CONTROL_QUEUES"] = CONTROL_QUEUES
    return out


@cache
def kms_key_wrapper(key_id: str) -> shared.KeyWrapperFactory:
    """Per job, a KMS wrapper bound to that job's encryption context (one factory
    per key, so configuring it again changes nothing)."""
    from skyhop.crypto.kms import KMSKeyWrapper

    def for_job(job: Job) -> KMSKeyWrapper:
        return KMSKeyWrapper(key_id, job_id=job.job_id)

    return for_job


def configure() -> None:
    """Fill in :mod:`functions.common`'s variables that are not set yet, and wrap data
    keys with KMS when the deployment names a key (once per execution environment;
    the settings are read on first use after this)."""
    for name, value in translated_env(os.environ).items():
        if not os.environ.get(name):
            os.environ[name] = value
    key_id = os.environ.get(KMS_KEY)
    if key_id:
        shared.use_key_wrapper(kms_key_wrapper(key_id))


@cache
def idempotency() -> tuple[DynamoDBPersistenceLayer, IdempotencyConfig]:
    """Powertools idempotency on the table ``infra_cdk`` creates (key ``id``,
    TTL ``expiration``), keyed by a request's ``request_id``."""
    table = os.environ.get(IDEMPOTENCY_TABLE)
    if not table:
        raise ConfigError(f"{IDEMPOTENCY_TABLE} is not set")
    return (
        DynamoDBPersistenceLayer(table_name=table),
        IdempotencyConfig(event_key_jmespath="request_id", expires_after_seconds=24 * 3600),
    )


def receive_count(record: Any) -> int | None:
    """SQS's ``ApproximateReceiveCount`` of a record, if it has one."""
    try:
        return int(record.attributes.approximate_receive_count)
    except (TypeError, ValueError, KeyError):
        return None


def reset() -> None:
    """Forget settings and clients (tests change the environment between cases)."""
    shared.reset()
    idempotency.cache_clear()
