"""The ManifestStore protocol on one DynamoDB table, in three modules:

- :mod:`~skyhop.state.dynamodb.table`: the single-table layout, its names for
  ``infra_cdk``, :func:`create_table`, the client and botocore error translation;
- :mod:`~skyhop.state.dynamodb.codec`: records as items (keys, values, revisions,
  counter deltas);
- :mod:`~skyhop.state.dynamodb.manifest`: :class:`DynamoDBManifest`, the
  conditional writes (the write rules themselves are :mod:`skyhop.state.rules`').
"""

from skyhop.state.dynamodb.manifest import DynamoDBManifest
from skyhop.state.dynamodb.table import (
    COUNTER_SHARDS,
    DEFAULT_MAX_AGE,
    DEFAULT_RETENTION,
    GLOBAL_SECONDARY_INDEXES,
    GSI_BY_PARENT,
    GSI_BY_PARENT_PK,
    GSI_BY_PARENT_SK,
    GSI_BY_STATE,
    GSI_BY_STATE_PK,
    GSI_BY_STATE_SK,
    PARTITION_KEY,
    SORT_KEY,
    TABLE_ENV,
    TABLE_NAME,
    TTL_ATTRIBUTE,
    IndexSpec,
    create_table,
)

__all__ = [
    "COUNTER_SHARDS",
    "DEFAULT_MAX_AGE",
    "DEFAULT_RETENTION",
    "GLOBAL_SECONDARY_INDEXES",
    "GSI_BY_PARENT",
    "GSI_BY_PARENT_PK",
    "GSI_BY_PARENT_SK",
    "GSI_BY_STATE",
    "GSI_BY_STATE_PK",
    "GSI_BY_STATE_SK",
    "PARTITION_KEY",
    "SORT_KEY",
    "TABLE_ENV",
    "TABLE_NAME",
    "TTL_ATTRIBUTE",
    "DynamoDBManifest",
    "IndexSpec",
    "create_table",
]
