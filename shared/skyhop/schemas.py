"""The published JSON Schemas of skyhop's messages, generated from the pydantic models.

``schemas/`` in the repository holds one file per message, named
``NAME.vVERSION.schema.json``, for systems that send skyhop requests or read its
events without Python. Regenerate after changing a model, and check in CI::

    python -m skyhop.schemas            # write schemas/
    python -m skyhop.schemas --check    # exit 1 and name the stale files

Each schema is JSON Schema draft 2020-12: requests, gateway events and the
replication rules file describe what a producer may send (pydantic's validation
mode); the job report describes what skyhop writes (serialization mode).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from skyhop.models import EventEnvelope, JobReport, ReplicationConfig, TransferRequest

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
