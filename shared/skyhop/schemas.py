"""The published JSON Schemas of skyhop's messages, generated from the pydantic models.

``schemas/`` in the repository holds one file per message, named
``NAME.vVERSION.schema.json``, for systems that send skyhop requests or read its
events without Python. Regenerate after changing a model, and check in CI::

    python -m skyhop.schemas            # write schemas/
    python -m skyhop.schemas --check    # exit 1 and name the stale files

Each schema is JSON Schema draft 2020-12: requests, gateway events and the
replication rules file describe what a producer may send (pydantic's validation
mode); the job report describes what skyhop writes (serialization mode).

A message a schema accepts, skyhop accepts, and the other way round: skyhop
reads messages strictly (:func:`skyhop.models.parse_message`), and
``tests/messages/`` holds a corpus of valid and invalid messages that the
models and a real JSON Schema validator must judge alike. Four rules have no
JSON Schema keyword; the schemas carry them as keywords of their own, which a
plain validator ignores and :func:`validator` enforces:

``x-skyhop-ordered: [[LOW, HIGH], ...]``
    on an object: where both properties are numbers, LOW is at most HIGH
    (``min_size``/``max_size``, ``min_age``/``max_age``).
``x-skyhop-unique: PROPERTY``
    on an array of objects: no two items share the PROPERTY's value (rule names).
``x-skyhop-first-of: [PROPERTY, ARRAY]``
    on an object: where both are given, PROPERTY is ARRAY's first item (a
    multicast request's ``destination`` and ``destinations``).
``format: skyhop-glob``
    a ``--include``/``--exclude`` pattern that compiles (balanced ``[`` and
    ``{``, no lone trailing ``\\``; see :mod:`skyhop.patterns`).

Formats are asserted (``date-time`` is RFC 3339 with an offset).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from skyhop.errors import SkyhopError, UsageError
from skyhop.models import (
    EventEnvelope,
    JobControlEnvelope,
    JobReport,
    ReplicationConfig,
    TransferRequest,
)

DIALECT = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True)
class Published:
    """One published message schema."""

    name: str
    version: int
    model: type[BaseModel]
    mode: Literal["validation", "serialization"] = "validation"
    title: str = ""

    @property
    def filename(self) -> str:
        return f"{self.name}.v{self.version}.schema.json"


PUBLISHED: tuple[Published, ...] = (
    Published("transfer_request", 1, TransferRequest, title="skyhop TransferRequest"),
    Published("gateway_event", 1, EventEnvelope, title="skyhop gateway event envelope"),
    Published("job_control", 1, JobControlEnvelope, title="skyhop job control (requests queue)"),
    Published("replication_config", 1, ReplicationConfig, title="skyhop replication rules"),
    Published("job_report", 1, JobReport, "serialization", title="skyhop job report"),
)


def schema_for(item: Published) -> dict[str, Any]:
    """The JSON Schema of one published message."""
    schema = item.model.model_json_schema(mode=item.mode)
    return {
        "$schema": DIALECT,
        "$id": item.filename,
        **schema,
        "title": item.title or schema.get("title", item.name),
    }


def validator(name: str, schema: dict[str, Any] | None = None) -> Any:
    """A ``jsonschema`` validator of the published schema ``name`` (``transfer_request``,
    ``gateway_event``, ``replication_config``, ``job_report``) that also enforces
    skyhop's own keywords and asserts formats. Needs the ``jsonschema`` package
    (skyhop's ``dev`` extra). ``schema``: the schema to use instead of the model's
    (e.g. the file as published)."""
    try:
        import jsonschema
        from jsonschema import validators
    except ImportError:  # pragma: no cover - dev dependency
        raise UsageError("validating against the schemas needs the jsonschema package") from None
    from skyhop.patterns import compile_glob

    [item] = [p for p in PUBLISHED if p.name == name] or [None]
    if item is None:
        raise UsageError(f"no published schema {name!r}: {', '.join(p.name for p in PUBLISHED)}")

    def ordered(v: Any, pairs: Any, instance: Any, schema: Any) -> Any:
        if not isinstance(instance, dict):
            return
        for low, high in pairs:
            a, b = instance.get(low), instance.get(high)
            numbers = all(isinstance(x, int | float) and not isinstance(x, bool) for x in (a, b))
            if numbers and a > b:
                yield jsonschema.ValidationError(f"{low} ({a}) is more than {high} ({b})")

    def unique(v: Any, prop: Any, instance: Any, schema: Any) -> Any:
        if not isinstance(instance, list):
            return
        seen: set[str] = set()
        for item in instance:
            value = item.get(prop) if isinstance(item, dict) else None
            if isinstance(value, str):
                if value in seen:
                    yield jsonschema.ValidationError(f"{prop} {value!r} appears twice")
                seen.add(value)

    def first_of(v: Any, pair: Any, instance: Any, schema: Any) -> Any:
        if not isinstance(instance, dict):
            return
        one, many = pair
        a, b = instance.get(one), instance.get(many)
        if isinstance(a, str) and a and isinstance(b, list) and b and b[0] != a:
            yield jsonschema.ValidationError(f"{one} {a!r} is not the first of {many}")

    formats = jsonschema.FormatChecker()

    @formats.checks("skyhop-glob", raises=SkyhopError)
    def _glob(value: object) -> bool:
        if isinstance(value, str):
            compile_glob(value)
        return True

    base = validators.validator_for({"$schema": DIALECT})
    cls = validators.extend(
        base,
        {"x-skyhop-ordered": ordered, "x-skyhop-unique": unique, "x-skyhop-first-of": first_of},
    )
    return cls(schema if schema is not None else schema_for(item), format_checker=formats)


def render(item: Published) -> str:
    """The file content: stable key order, two-space indent, trailing newline."""
    return json.dumps(schema_for(item), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def stale(directory: Path) -> list[str]:
    """Files in ``directory`` that are missing or differ from the models."""
    out = []
    for item in PUBLISHED:
        path = directory / item.filename
        if not path.is_file() or path.read_text(encoding="utf-8") != render(item):
            out.append(item.filename)
    return out


def write(directory: Path) -> list[Path]:
    """Write every schema into ``directory``; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for item in PUBLISHED:
        path = directory / item.filename
        path.write_text(render(item), encoding="utf-8")
        paths.append(path)
    return paths


def default_directory() -> Path:
    """``schemas/`` of the source checkout this module lives in, else of the cwd."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file():
        return root / "schemas"
    return Path.cwd() / "schemas"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m skyhop.schemas", description="write or check the published JSON Schemas"
    )
    parser.add_argument("--out", type=Path, default=None, help="directory (default: schemas/)")
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if a file is stale"
    )
    args = parser.parse_args(argv)
    directory = args.out or default_directory()
    if args.check:
        bad = stale(directory)
        if bad:
            print(
                f"stale schemas in {directory}: {', '.join(bad)} (run `python -m skyhop.schemas`)",
                file=sys.stderr,
            )
            return 1
        return 0
    for path in write(directory):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
