"""The DynamoDB manifest's table: its names for ``infra_cdk``, :func:`create_table`
for tests and manual setups, the client and the translation of botocore errors.

Single-table design
-------------------
Every record of a job lives in the partition ``pk = "JOB#<job_id>"``; the sort
key tells the kinds apart and keeps objects and chunks in id order::

    record          sk                       attributes
    job             JOB                      the Job model's fields
    object          OBJ#<object_id, 12 digits> the ObjectEntry's fields
    chunk           CHK#<chunk_id, 12 digits>  the Chunk's fields
    counter shard   CNT#<n, 2 digits>        per-state counts (see "Progress" in
                                             :mod:`skyhop.state.dynamodb.manifest`)

Two global secondary indexes answer the other queries; none of them scans::

    GSI by_state  (gsi1pk, gsi1sk; projection ALL)
      job           JOBS#<state>               <created_at>#<job_id>
      object        JOB#<job_id>#OBJ#<state>   OBJ#<object_id>
      chunk         JOB#<job_id>#CHK#<state>   CHK#<chunk_id>
    GSI by_parent (gsi2pk, gsi2sk; projection KEYS_ONLY)
      job           JOBS                       <created_at>#<job_id>   list_jobs, newest first
      chunk         JOB#<job_id>#OBJ#<object>  CHK#<chunk_id>          chunks of one object

``by_parent`` is keys-only and its memberships never change after insert, so
the chunks of an object are read back with strongly consistent BatchGetItem:
``complete_object`` must see a chunk verified a moment ago by another function.

The TTL attribute is ``expires_at`` (epoch seconds).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from skyhop.clouds import aws
from skyhop.errors import (
    AccessError,
    NotFoundError,
    SkyhopError,
    StoreError,
    ThrottledError,
)
from skyhop.state import counters

TABLE_NAME = "skyhop-manifest"
"""Default table name; ``$SKYHOP_TABLE`` overrides it in :meth:`DynamoDBManifest.from_env`."""
TABLE_ENV = "SKYHOP_TABLE"
PARTITION_KEY = "pk"
SORT_KEY = "sk"
GSI_BY_STATE = "by_state"
GSI_BY_STATE_PK = "gsi1pk"
GSI_BY_STATE_SK = "gsi1sk"
GSI_BY_STATE_PROJECTION = "ALL"
GSI_BY_PARENT = "by_parent"
GSI_BY_PARENT_PK = "gsi2pk"
GSI_BY_PARENT_SK = "gsi2sk"
GSI_BY_PARENT_PROJECTION = "KEYS_ONLY"
TTL_ATTRIBUTE = "expires_at"


class IndexSpec(NamedTuple):
    """One global secondary index, as ``infra_cdk`` declares it (all keys are strings)."""

    name: str
    partition_key: str
    sort_key: str
    projection: str  # "ALL" or "KEYS_ONLY"


GLOBAL_SECONDARY_INDEXES: tuple[IndexSpec, ...] = (
    IndexSpec(GSI_BY_STATE, GSI_BY_STATE_PK, GSI_BY_STATE_SK, GSI_BY_STATE_PROJECTION),
    IndexSpec(GSI_BY_PARENT, GSI_BY_PARENT_PK, GSI_BY_PARENT_SK, GSI_BY_PARENT_PROJECTION),
)
COUNTER_SHARDS = counters.COUNTER_SHARDS
DEFAULT_RETENTION = timedelta(days=14)
DEFAULT_MAX_AGE = timedelta(days=30)

_THROTTLE_CODES = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
}
_TRANSIENT_CODES = {"InternalServerError", "ServiceUnavailable", "TransactionInProgressException"}
_ACCESS_CODES = {
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "MissingAuthenticationTokenException",
}


def create_table(
    table_name: str = TABLE_NAME, *, region: str | None = None, wait: bool = True
) -> None:
    """Create the manifest table with its GSIs and TTL (idempotent: an existing
    table only gets its TTL switched on). ``infra_cdk`` declares the same."""
    client = client_for(region)
    spec: dict[str, Any] = {
        "TableName": table_name,
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": "S"}
            for name in (
                PARTITION_KEY,
                SORT_KEY,
                *(key for gsi in GLOBAL_SECONDARY_INDEXES for key in gsi[1:3]),
            )
        ],
        "KeySchema": [
            {"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
            {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
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
            for gsi in GLOBAL_SECONDARY_INDEXES
        ],
        "BillingMode": "PAY_PER_REQUEST",
        "SSESpecification": {"Enabled": True},
    }
    try:
        client.create_table(**spec)
    except ClientError as exc:
        if error_code(exc) != "ResourceInUseException":
            raise translate(exc, f"creating DynamoDB table {table_name}") from None
    try:
        if wait:
            client.get_waiter("table_exists").wait(
                TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
            )
        client.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
    except ClientError as exc:
        if "already enabled" not in str(exc):
            raise translate(exc, f"enabling TTL on {table_name}") from None
    except BotoCoreError as exc:
        raise StoreError(f"DynamoDB table {table_name} did not become active: {exc}") from None


def client_for(region: str | None) -> Any:
    """The DynamoDB client (the AWS kit's, with 8 standard retries)."""
    return aws.client(
        "dynamodb", region, max_attempts=8, no_region="set AWS_REGION or pass region="
    )


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def translate(exc: ClientError, what: str) -> SkyhopError:
    """A botocore error as one line of the skyhop error family."""
    code = error_code(exc)
    message = exc.response.get("Error", {}).get("Message") or code
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code == "ResourceNotFoundException":
        return NotFoundError(
            f"{what}: table not found (create it with skyhop.state.dynamodb.create_table "
            "or deploy infra_cdk)"
        )
    if code in _ACCESS_CODES or status == 403:
        return AccessError(f"{what}: access denied ({code}): {message}")
    if code in _THROTTLE_CODES:
        return ThrottledError(f"{what}: throttled ({code})")
    if code in _TRANSIENT_CODES or (isinstance(status, int) and status >= 500):
        return StoreError(f"{what}: {code}: {message}", retryable=True)
    if code == "ValidationException":
        return StoreError(f"{what}: rejected by DynamoDB: {message}")
    return StoreError(f"{what}: {code}: {message}")
