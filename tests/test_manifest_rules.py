"""The manifest's write rules (skyhop.state.rules) on their own, without a store:
what each store's conditional write is built from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from skyhop.errors import ConflictError, UsageError
from skyhop.models import ChunkState, JobState, ObjectState
from skyhop.state import rules

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_verified_chunk_is_final_and_other_chunk_moves_follow_the_table():
    assert not rules.CHUNK.allowed(ChunkState.VERIFIED, ChunkState.PENDING)
    assert not rules.CHUNK.allowed(ChunkState.VERIFIED, None)  # not even an update in place
    assert rules.CHUNK.allowed(ChunkState.DISPATCHED, ChunkState.VERIFIED)
    assert not rules.CHUNK.allowed(ChunkState.FAILED, ChunkState.DISPATCHED)
    with pytest.raises(UsageError, match="may not go from verified to pending"):
        rules.chunk_transition({ChunkState.VERIFIED}, ChunkState.PENDING, {})
    # without verified in expect, a write applies from the states that allow it
    write = rules.chunk_transition(
        {ChunkState.PENDING, ChunkState.DISPATCHED}, ChunkState.FAILED, {"error": "reset"}
    )
    assert write.sources == {ChunkState.PENDING, ChunkState.DISPATCHED}
    assert write.applies(ChunkState.DISPATCHED) and not write.applies(ChunkState.VERIFIED)
    assert write.fields == {"error": "reset", "state": ChunkState.FAILED}


def test_the_state_of_a_chunk_moves_only_through_to():
    with pytest.raises(UsageError, match="through `to`"):
        rules.chunk_transition({ChunkState.PENDING}, ChunkState.DISPATCHED, {"state": "failed"})


@pytest.mark.parametrize(
    "fields, problem",
    [
        ({"chunk_id": 9}, "cannot change chunk_id"),
        ({"object_id": 9}, "cannot change object_id"),
        ({"colour": "red"}, "unknown Chunk field"),
        ({"attempts": "many"}, "invalid Chunk field attempts"),
    ],
)
def test_frozen_unknown_and_bad_fields_are_usage_errors(fields, problem):
    with pytest.raises(UsageError, match=problem):
        rules.chunk_transition({ChunkState.PENDING}, ChunkState.DISPATCHED, fields)


def test_object_moves_follow_the_table():
    assert rules.object_update({ObjectState.VERIFIED}, {"state": ObjectState.FAILED}).sources == {
        ObjectState.VERIFIED
    }
    with pytest.raises(UsageError, match="may not go from failed to verified"):
        rules.object_update({ObjectState.FAILED}, {"state": ObjectState.VERIFIED})
    # an update that names no state applies from any state
    assert rules.object_update(None, {"error": "x"}).sources is None


def test_every_job_update_moves_updated_at_strictly_forward():
    assert rules.job_updated_at({}, T0, T0) > T0  # the clock did not move: still later
    assert rules.job_updated_at({}, T0, T0 - timedelta(seconds=1)) == T0
    asked = T0 - timedelta(hours=1)  # a caller's value behind the record's
    assert rules.job_updated_at({"updated_at": asked}, T0, T0) > T0


def test_job_conditions_are_conflicts_naming_the_state():
    with pytest.raises(ConflictError, match="is running, not planned"):
        rules.check_job(
            "j-1", JobState.RUNNING, T0, expect={JobState.PLANNED}, expect_updated_at=None
        )
    with pytest.raises(ConflictError, match="changed since it was read"):
        rules.check_job(
            "j-1", JobState.RUNNING, T0, expect=None, expect_updated_at=T0 - timedelta(1)
        )
    rules.check_job("j-1", JobState.RUNNING, T0, expect={JobState.RUNNING}, expect_updated_at=T0)


# values of every plain type a field takes, and some it does not (coerced or rejected)
_SAMPLES = [
    None,
    True,
    False,
    0,
    -1,
    7,
    2**70,
    0.0,
    -2.5,
    1e16,
    float("inf"),
    "",
    "abc",
    "5",
    "tab\there",
    'q"uote\\',
    "\x7f",
    "héllo ☃",
    "verified",
    "pending",
    ChunkState.VERIFIED,
    ObjectState.FAILED,
    JobState.RUNNING,
    T0,
    datetime(2026, 1, 1, 12, 30, 1, 250),
    datetime(2026, 1, 1, 12, 30, tzinfo=timezone(timedelta(hours=3))),
    {"crc32c": "abc"},
    [],
]


def _adapter_result(adapter, value):
    try:
        return "ok", adapter.validate_python(value)
    except Exception as exc:  # noqa: BLE001 - the outcome is compared, whatever it is
        return "error", type(exc).__name__


@pytest.mark.parametrize("kind", [rules.JOB, rules.OBJECT, rules.CHUNK], ids=lambda k: k.name)
def test_fields_take_exactly_what_the_models_validation_takes(kind):
    """RecordRules.fields gives, for every field and value, the value (of the same
    type) the field's own validation gives, and UsageError where it fails."""
    for name in kind.model.model_fields:
        if name in kind.frozen:
            continue
        adapter = rules.field_adapter(kind.model, name)
        for value in _SAMPLES:
            outcome, expected = _adapter_result(adapter, value)
            if outcome == "error":
                with pytest.raises(UsageError, match=f"invalid {kind.name} field {name}"):
                    kind.fields({name: value})
                continue
            got = kind.fields({name: value})[name]
            assert type(got) is type(expected) and got == expected, (name, value)
