"""How manifest records become DynamoDB items and back: keys, attribute values,
revisions and the per-state counter deltas (layout in :mod:`skyhop.state.dynamodb.table`).

Items hold the model's JSON-mode fields (floats as ``Decimal``) beside the
internal attributes (keys, index keys, ``expires_at``, ``rev``), which
:func:`decode` leaves out.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from pydantic import BaseModel

from skyhop.state.dynamodb.table import (
    GSI_BY_PARENT_PK,
    GSI_BY_PARENT_SK,
    GSI_BY_STATE_PK,
    GSI_BY_STATE_SK,
    PARTITION_KEY,
    SORT_KEY,
    TTL_ATTRIBUTE,
)

REV = "rev"
INTERNAL = frozenset(
    {
        PARTITION_KEY,
        SORT_KEY,
        GSI_BY_STATE_PK,
        GSI_BY_STATE_SK,
        GSI_BY_PARENT_PK,
        GSI_BY_PARENT_SK,
        TTL_ATTRIBUTE,
        REV,
    }
)
JOB_SK = "JOB"
JOBS = "JOBS"

_SER = TypeSerializer()
_DES = TypeDeserializer()

M = TypeVar("M", bound=BaseModel)


def pk(job_id: str) -> str:
    """The partition of a job's records."""
    return f"JOB#{job_id}"


def obj_sk(object_id: int) -> str:
    return f"OBJ#{object_id:012d}"


def chk_sk(chunk_id: int) -> str:
    return f"CHK#{chunk_id:012d}"


def obj_parent(job_id: str, object_id: int) -> str:
    return f"{pk(job_id)}#OBJ#{object_id:012d}"


def revision(item: dict[str, Any]) -> int:
    """The item's revision (0 for an item written before revisions existed)."""
    return int(item.get(REV, {}).get("N", "0"))


def unchanged(item: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The condition that the record is still the one read: same revision and state."""
    values: dict[str, Any] = {":rev": item.get(REV, {"N": "0"}), ":state": item["state"]}
    if REV in item:
        return "#rev = :rev AND #state = :state", values
    values.pop(":rev")
    return "attribute_not_exists(#rev) AND #state = :state", values


def encode(model: BaseModel, extra: dict[str, Any]) -> dict[str, Any]:
    """``model`` as a DynamoDB item, with the internal attributes ``extra``."""
    data = model.model_dump(mode="json")
    data.update(extra)
    return {name: _SER.serialize(_to_dynamo(value)) for name, value in data.items()}


def decode(cls: type[M], item: dict[str, Any]) -> M:
    """The model of an item, its internal attributes left out."""
    data = {
        name: _from_dynamo(_DES.deserialize(value))
        for name, value in item.items()
        if name not in INTERNAL
    }
    return cls.model_validate(data)


def _to_dynamo(value: Any) -> Any:
    """JSON-mode values with floats as Decimal (DynamoDB numbers)."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    return value
