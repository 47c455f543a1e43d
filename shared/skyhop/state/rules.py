"""The manifest's write rules, stated once for every store.

A store (SQLite, DynamoDB, Firestore, Table Storage) keeps only the encoding
of records and its way of writing conditionally; what a write may do is
decided here:

Frozen fields
    A record's identity never changes: ``job_id`` of a job; ``job_id`` and
    ``object_id`` of an object; ``job_id``, ``chunk_id`` and ``object_id`` of a
    chunk (:data:`JOB`, :data:`OBJECT`, :data:`CHUNK` ``.frozen``). Naming one
    in an update is a :class:`~skyhop.errors.UsageError`, before anything is
    written, and so is an unknown field or a value the model rejects.

Allowed transitions (``.transitions``)
    chunk   pending -> dispatched | verified | failed
            dispatched -> pending | verified | failed
            failed -> pending
            verified -> nothing: a verified chunk is final
    object  pending -> verified | failed
            failed -> pending (re-opened before it is verified again)
            verified -> pending (re-opened to be completed and compared again)
                      | failed (the final listing of the destination misses it)
    job     any change of state the control plane asks for, under its
            ``expect`` states and ``expect_updated_at`` (the job's state
            machine lives in :mod:`skyhop.controlplane`)
    A write whose ``expect`` names a state it may not leave that way is a
    UsageError (a bug in the caller, never a lost race). Without ``expect``
    the write applies from the states that allow it (:meth:`RecordRules.sources`).
    Keeping the state (an update that names no new state) is always allowed,
    except for a verified chunk, which no transition rewrites.

Duplicate and late events
    A transition applies only when the record is in one of the caller's
    ``expect`` states, checked by the store in the same conditional write
    that changes it. A duplicated ``chunk_verified`` therefore finds the
    chunk verified and changes nothing (not its checksums, not its
    counters); a late ``chunk_failed`` of an earlier attempt cannot undo a
    verification; a dispatch record overtaken by the verification finds the
    chunk verified and writes nothing. The store reports such a write as not
    applied (``False``; ``ConflictError`` for a job), never as an error.

Jobs' ``updated_at``
    Every job update moves ``updated_at`` forward, strictly past the value it
    replaces (:func:`job_updated_at`), so a compare-and-swap on it can never
    apply twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from functools import cache
from types import NoneType, UnionType
from typing import Annotated, Any, Generic, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError

from skyhop.errors import ConflictError, UsageError
from skyhop.models import Chunk, ChunkState, Job, JobState, ObjectEntry, ObjectState
from skyhop.state.base import next_updated_at

M = TypeVar("M", bound=BaseModel)


@cache
def field_adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    """A validator and serializer of one field of ``model``."""
    info = model.model_fields[name]
    # a type built at run time from the field's annotation and constraints, which
    # mypy sees only as a special form
    form: Any = Annotated[info.annotation, info]
    return TypeAdapter(form)


@cache
def _taken_as_is(model: type[BaseModel], name: str) -> frozenset[type]:
    """The types of value field ``name`` of ``model`` takes unchanged, so that its
    validation can be skipped: those of its plain types (str, int, float, bool,
    datetime, an Enum, None when optional) when the field has no constraints; a
    value of exactly one of them validates to itself (in a union, the member of its
    own type; tests/test_manifest_rules.py holds each field to it). Any other value
    (a subclass, a str for an Enum, a dict, a model) is validated."""
    info = model.model_fields[name]
    if info.metadata:  # ge=0, a pattern, a validator: every value is checked
        return frozenset()
    annotation = info.annotation
    union = get_origin(annotation) in (Union, UnionType)
    members = get_args(annotation) if union else (annotation,)
    plain = {str, int, float, bool, datetime, NoneType}
    return frozenset(
        m
        for m in members
        if m in plain or (isinstance(m, type) and issubclass(m, Enum) and m is not Enum)
    )


@cache
def _field_names(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(model.model_fields)


def _first_error(exc: ValidationError) -> tuple[str, str]:
    first = exc.errors()[0]
    return ".".join(str(p) for p in first["loc"]), first["msg"]


@dataclass(frozen=True)
class RecordRules(Generic[M]):
    """What an update of one kind of record may change, and from which states."""

    model: type[M]
    frozen: frozenset[str]
    #: state -> the states it may move to; None: any (jobs)
    transitions: Mapping[Any, frozenset[Any]] | None = None
    #: states no write may touch at all (a verified chunk)
    final: frozenset[Any] = field(default_factory=frozenset)
    #: :meth:`sources` decided: (expect, to) -> sources
    _decided: dict[tuple[frozenset[Any] | None, Any], frozenset[Any] | None] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def name(self) -> str:
        return self.model.__name__

    def fields(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """``fields`` checked one by one against the model, as validated Python
        values; UsageError for a frozen or unknown field or a bad value."""
        fixed = self.frozen & fields.keys()
        if fixed:
            raise UsageError(f"cannot change {', '.join(sorted(fixed))} of a {self.name}")
        unknown = fields.keys() - _field_names(self.model)
        if unknown:
            raise UsageError(f"unknown {self.name} field(s): {', '.join(sorted(unknown))}")
        out: dict[str, Any] = {}
        for name, value in fields.items():
            if type(value) in _taken_as_is(self.model, name):
                out[name] = value  # what its validation would give: itself
                continue
            try:
                out[name] = field_adapter(self.model, name).validate_python(value)
            except ValidationError as exc:
                _, msg = _first_error(exc)
                raise UsageError(f"invalid {self.name} field {name}: {msg}") from None
        return out

    def allowed(self, current: Any, to: Any | None) -> bool:
        """Whether a record in ``current`` may be written moving to ``to`` (None:
        the state stays)."""
        if current in self.final:
            return False
        if to is None or to == current or self.transitions is None:
            return True
        return to in self.transitions.get(current, frozenset())

    def sources(self, expect: Iterable[Any] | None, to: Any | None) -> frozenset[Any] | None:
        """The states a record must be in for the write to apply: the caller's
        ``expect`` (all of them allowed, else UsageError), or without it every
        state that allows the write; None when any state does. Decided once per
        (expect, to): every chunk of a job asks the same few questions."""
        key = (frozenset(expect) if expect is not None else None, to)
        if key in self._decided:
            return self._decided[key]
        found = self._decided[key] = self._sources(expect, to)
        return found

    def _sources(self, expect: Iterable[Any] | None, to: Any | None) -> frozenset[Any] | None:
        states = self._states()
        if expect is None:
            if states is None:
                return None
            ok = frozenset(s for s in states if self.allowed(s, to))
            return None if ok == frozenset(states) else ok
        wanted = frozenset(expect)
        bad = sorted(str(getattr(s, "value", s)) for s in wanted if not self.allowed(s, to))
        if bad:
            target = getattr(to, "value", to) if to is not None else "an update"
            raise UsageError(f"a {self.name} may not go from {', '.join(bad)} to {target}")
        return wanted

    def _states(self) -> list[Any] | None:
        if self.transitions is None:
            return None
        return list(self.transitions)

    def applies(self, current: Any, expect: Iterable[Any] | None, to: Any | None) -> bool:
        """Whether a record read in ``current`` takes the write (the check a store
        that reads before its conditional write makes)."""
        sources = self.sources(expect, to)
        return sources is None or current in sources

    def merged(self, old: M, fields: Mapping[str, Any]) -> M:
        """``old`` with ``fields`` set, validated as a whole by the model."""
        checked = self.fields(fields)
        data = old.model_dump()
        data.update({k: _dump(v) for k, v in checked.items()})
        try:
            return self.model.model_validate(data)
        except ValidationError as exc:
            where, msg = _first_error(exc)
            raise UsageError(f"invalid {self.name} field {where}: {msg}") from None


def _dump(value: Any) -> Any:
    return value.model_dump() if isinstance(value, BaseModel) else value


JOB: RecordRules[Job] = RecordRules(Job, frozenset({"job_id"}))
OBJECT: RecordRules[ObjectEntry] = RecordRules(
    ObjectEntry,
    frozenset({"job_id", "object_id"}),
    {
        ObjectState.PENDING: frozenset({ObjectState.VERIFIED, ObjectState.FAILED}),
        ObjectState.FAILED: frozenset({ObjectState.PENDING}),
        ObjectState.VERIFIED: frozenset({ObjectState.PENDING, ObjectState.FAILED}),
    },
)
CHUNK: RecordRules[Chunk] = RecordRules(
    Chunk,
    frozenset({"job_id", "chunk_id", "object_id"}),
    {
        ChunkState.PENDING: frozenset(
            {ChunkState.DISPATCHED, ChunkState.VERIFIED, ChunkState.FAILED}
        ),
        ChunkState.DISPATCHED: frozenset(
            {ChunkState.PENDING, ChunkState.VERIFIED, ChunkState.FAILED}
        ),
        ChunkState.FAILED: frozenset({ChunkState.PENDING}),
        ChunkState.VERIFIED: frozenset(),
    },
    final=frozenset({ChunkState.VERIFIED}),
)


# ---------------------------------------------------------------- the protocol's writes


@dataclass(frozen=True)
class Write:
    """One conditional write, decided: the validated fields to set and the
    states the record must be in (None: any)."""

    fields: dict[str, Any]
    sources: frozenset[Any] | None

    def applies(self, current: Any) -> bool:
        return self.sources is None or current in self.sources


def chunk_transition(
    expect: Iterable[ChunkState], to: ChunkState, fields: Mapping[str, Any]
) -> Write:
    """``transition_chunk``: the state moves through ``to``, never a field."""
    if "state" in fields:
        raise UsageError("transition_chunk sets the state through `to`, not a field")
    values = CHUNK.fields({**fields, "state": to})
    return Write(values, CHUNK.sources(expect, values["state"]))


def object_update(expect: Iterable[ObjectState] | None, fields: Mapping[str, Any]) -> Write:
    """``update_object``: any fields, the state among them under the transition rules."""
    values = OBJECT.fields(fields)
    return Write(values, OBJECT.sources(expect, values.get("state")))


def job_updated_at(values: Mapping[str, Any], now: datetime, previous: datetime | None) -> datetime:
    """The ``updated_at`` a job update writes: the caller's (in ``values``, as
    :meth:`RecordRules.fields` of ``JOB`` validated them) or ``now``, strictly
    after the value it replaces when that is known."""
    value: datetime = values.get("updated_at", now)
    return next_updated_at(value, previous)


def job_update(
    job_id: str,
    old: Job,
    *,
    expect: Iterable[JobState] | None,
    expect_updated_at: datetime | None,
    fields: Mapping[str, Any],
    now: datetime,
) -> Job:
    """``update_job`` of a job read as ``old``: the new job, or ConflictError when
    the conditions do not hold (a store then writes it conditioned on ``old``)."""
    values = JOB.fields(fields)  # bad fields fail before conditions are looked at
    check_job(job_id, old.state, old.updated_at, expect=expect, expect_updated_at=expect_updated_at)
    values["updated_at"] = job_updated_at(values, now, old.updated_at)
    return JOB.merged(old, values)


def check_job(
    job_id: str,
    state: JobState,
    updated_at: datetime,
    *,
    expect: Iterable[JobState] | None,
    expect_updated_at: datetime | None,
) -> None:
    """ConflictError unless a job in ``state``, last updated at ``updated_at``,
    meets the caller's conditions."""
    wanted = set(expect) if expect is not None else None
    if wanted is not None and state not in wanted:
        raise job_conflict(job_id, state, wanted)
    if expect_updated_at is not None and updated_at != expect_updated_at:
        raise ConflictError(f"job {job_id} changed since it was read")


def job_conflict(
    job_id: str, state: JobState | str, expect: Iterable[JobState] | None
) -> ConflictError:
    """The error for a job update whose conditions failed, seen in ``state``."""
    value = getattr(state, "value", state)
    wanted_states = {getattr(s, "value", s) for s in expect} if expect is not None else None
    if wanted_states is None or value in wanted_states:
        return ConflictError(f"job {job_id} changed since it was read")
    wanted = ", ".join(sorted(wanted_states)) or "nothing"
    return ConflictError(f"job {job_id} is {value}, not {wanted}")


def state_values(states: Iterable[Enum]) -> list[str]:
    """Sorted distinct values of ``states`` (for queries and conditions)."""
    return sorted({s.value for s in states})


__all__ = [
    "CHUNK",
    "JOB",
    "OBJECT",
    "RecordRules",
    "Write",
    "check_job",
    "chunk_transition",
    "field_adapter",
    "job_conflict",
    "job_update",
    "job_updated_at",
    "object_update",
    "state_values",
]
