"""Replication rules for the CDK app: loading, validation and what they subscribe to.

Pure Python (no CDK import), so the rules file can be checked quickly and on
its own. Every problem is one :class:`RulesFileError` line that names the file
and, where there is one, the rule (by name and by index).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from skyhop.errors import UsageError
from skyhop.models import ReplicationConfig, ReplicationRule, parse_message
from skyhop.uri import parse_uri

NotificationMode = Literal["eventbridge", "sqs"]

# Lambda's environment holds 4 KB in all; the rules get most of it, the rest
# is for the resource names and Powertools settings.
RULES_ENV_BUDGET = 3000


class RulesFileError(UsageError):
    """A rules file that cannot be read, parsed or validated."""


def load_rules(path: Path | str) -> ReplicationConfig:
    """Read and validate a YAML or JSON rules file; raise :class:`RulesFileError` naming the fault."""
    path = Path(path)
    where = f"rules file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RulesFileError(f"{where}: not found") from None
    except OSError as exc:
        raise RulesFileError(f"{where}: cannot be read ({exc.strerror})") from None
    data = _parse(text, path, where)
    config = parse_rules(data, where=where)
    check_rules(config, where=where)
    return config


def parse_rules(data: Any, *, where: str = "rules") -> ReplicationConfig:
    """Validate already-parsed rules data against :class:`ReplicationConfig`."""
    if not isinstance(data, dict):
        raise RulesFileError(f"{where}: expected a mapping with 'version' and 'rules'")
    try:
        # strictly, as the published replication_config schema says (YAML's own
        # types: a quoted "64" is text, not a size)
        return parse_message(ReplicationConfig, json.dumps(data, default=str))
    except ValidationError as exc:
        raise RulesFileError(f"{where}: {_describe(exc, data)}") from None


def check_rules(
    config: ReplicationConfig, *, where: str = "rules", mode: NotificationMode = "eventbridge"
) -> None:
    """Checks the model cannot make alone: bucket names, loops, what a notification mode allows."""
    for index, rule in enumerate(config.rules):
        label = f"{where}: rule {rule.name!r} (rules[{index}])"
        if rule.source_bucket is not None:
            try:
                parse_uri(f"s3://{rule.source_bucket}/")
            except UsageError:
                raise RulesFileError(
                    f"{label}: source_bucket {rule.source_bucket!r} is not an S3 bucket name"
                ) from None
            looping = _loops(rule)
            if looping:
                raise RulesFileError(
                    f"{label}: destination {looping} lies inside the rule's own "
                    f"source s3://{rule.source_bucket}/{rule.prefix}; replication would loop"
                )
        if rule.prefix.startswith("/"):
            raise RulesFileError(f"{label}: prefix {rule.prefix!r} must not start with '/'")
        if mode == "sqs" and rule.bucket_tag is not None:
            raise RulesFileError(
                f"{label}: bucket_tag selectors need notificationMode=eventbridge "
                "(S3 notifications to SQS are configured per named bucket)"
            )
    cycle = _cycle(config.rules)
    if cycle:
        raise RulesFileError(
            f"{where}: rules {' -> '.join(repr(n) for n in cycle)} replicate into each "
            "other's sources; replication would loop"
        )


def rules_json(config: ReplicationConfig, *, where: str = "rules") -> str:
    """The compact JSON the ``bucket_events`` function reads from ``SKYHOP_RULES``."""
    text = config.model_dump_json(exclude_defaults=True)
    if len(text.encode()) > RULES_ENV_BUDGET:
        raise RulesFileError(
            f"{where}: {len(config.rules)} rules take {len(text.encode())} bytes as JSON, over "
            f"the {RULES_ENV_BUDGET}-byte budget of the function environment; merge rules "
            "or shorten prefixes and destinations"
        )
    return text


# ---------------------------------------------------------------- subscriptions


@dataclass(frozen=True)
class Subscription:
    """What one rule listens to: a bucket (or every bucket, for tag selectors) and a prefix."""

    rule: str
    bucket: str | None
    prefix: str
    deletes: bool

    @property
    def detail_types(self) -> list[str]:
        """EventBridge ``detail-type`` values of the S3 events this subscription needs."""
        return ["Object Created", "Object Deleted"] if self.deletes else ["Object Created"]

    def event_pattern(self) -> dict[str, Any]:
        """The EventBridge pattern (as plain JSON) matching this subscription's S3 events."""
        detail: dict[str, Any] = {}
        if self.bucket is not None:
            detail["bucket"] = {"name": [self.bucket]}
        if self.prefix:
            detail["object"] = {"key": [{"prefix": self.prefix}]}
        pattern: dict[str, Any] = {"source": ["aws.s3"], "detail-type": self.detail_types}
        if detail:
            pattern["detail"] = detail
        return pattern


def subscriptions(config: ReplicationConfig) -> list[Subscription]:
    """One subscription per rule, in file order."""
    return [
        Subscription(r.name, r.source_bucket, r.prefix, r.propagate_deletes) for r in config.rules
    ]


@dataclass(frozen=True)
class BucketNotification:
    """One S3 → SQS notification filter on a named bucket (``kind`` created or removed)."""

    bucket: str
    kind: Literal["created", "removed"]
    prefix: str


def bucket_notifications(config: ReplicationConfig) -> list[BucketNotification]:
    """The per-bucket S3 notifications for ``notificationMode=sqs``.

    S3 rejects two notifications of one event type whose prefixes overlap, so a
    prefix covered by a shorter one of the same bucket is dropped: the function
    filters each event against the rules again anyway.
    """
    wanted: dict[tuple[str, str], set[str]] = {}
    for rule in config.rules:
        if rule.source_bucket is None:
            continue
        kinds = ["created", "removed"] if rule.propagate_deletes else ["created"]
        for kind in kinds:
            wanted.setdefault((rule.source_bucket, kind), set()).add(rule.prefix)
    out: list[BucketNotification] = []
    for (bucket, kind), prefixes in sorted(wanted.items()):
        for prefix in _uncovered(prefixes):
            out.append(BucketNotification(bucket, kind, prefix))  # type: ignore[arg-type]
    return out


@dataclass(frozen=True)
class DataAccess:
    """The S3 locations the rules read from and write to."""

    sources: tuple[tuple[str, str], ...]  # (bucket, prefix)
    destinations: tuple[tuple[str, str, bool], ...]  # (bucket, prefix, deletes)
    tagged_sources: bool  # some rule selects buckets by tag: sources are account-wide
    tag_keys: tuple[str, ...]

    @property
    def buckets(self) -> list[str]:
        """Every named bucket the rules touch."""
        names = {b for b, _ in self.sources} | {b for b, _, _ in self.destinations}
        return sorted(names)


def data_access(config: ReplicationConfig) -> DataAccess:
    """Which S3 buckets and prefixes the rules read and write (other clouds need no AWS grant)."""
    sources: list[tuple[str, str]] = []
    destinations: list[tuple[str, str, bool]] = []
    tag_keys: list[str] = []
    for rule in config.rules:
        if rule.source_bucket is not None:
            sources.append((rule.source_bucket, rule.prefix))
        else:
            tag_keys.append((rule.bucket_tag or "").partition("=")[0])
        for destination in rule.all_destinations:
            dest = parse_uri(destination)
            if dest.scheme == "s3":
                destinations.append((dest.bucket, dest.key, rule.propagate_deletes))
    return DataAccess(
        sources=tuple(_unique(sources)),
        destinations=tuple(_unique(destinations)),
        tagged_sources=bool(tag_keys),
        tag_keys=tuple(sorted(set(tag_keys))),
    )


# ---------------------------------------------------------------- helpers


def _parse(text: str, path: Path, where: str) -> Any:
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise RulesFileError(f"{where}: not valid JSON: {exc.msg} at line {exc.lineno}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "syntax error"
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise RulesFileError(f"{where}: not valid YAML: {problem}{at}") from None


def _describe(exc: ValidationError, data: dict[str, Any]) -> str:
    """One line for all of a validation error's faults, each naming its rule."""
    raw_rules = data.get("rules") if isinstance(data.get("rules"), list) else []
    parts: list[str] = []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            index = loc[1]
            raw = raw_rules[index] if index < len(raw_rules) else None
            name = raw.get("name") if isinstance(raw, dict) else None
            label = f"rule {name!r} (rules[{index}])" if name else f"rules[{index}]"
            field = ".".join(str(p) for p in loc[2:])
            parts.append(f"{label}: {field}: {msg}" if field else f"{label}: {msg}")
        elif loc:
            parts.append(f"{'.'.join(str(p) for p in loc)}: {msg}")
        else:
            parts.append(msg)
    return "; ".join(parts)


def _loops(rule: ReplicationRule) -> str | None:
    """The destination of ``rule`` that lies inside its own source, if one does."""
    for destination in rule.all_destinations:
        dest = parse_uri(destination)
        if dest.scheme != "s3" or dest.bucket != rule.source_bucket:
            continue
        if dest.key.startswith(rule.prefix) or rule.prefix.startswith(dest.key):
            return destination
    return None


def _feeds(a: ReplicationRule, b: ReplicationRule) -> bool:
    """Whether objects ``a`` writes can land under ``b``'s (named) source prefix."""
    for destination in a.all_destinations:
        dest = parse_uri(destination)
        if dest.scheme != "s3" or dest.bucket != b.source_bucket:
            continue
        if dest.key.startswith(b.prefix) or b.prefix.startswith(dest.key):
            return True
    return False


def _cycle(rules: list[ReplicationRule]) -> list[str]:
    """Names along a loop of rules feeding each other (first rule repeated at the end), or []."""
    edges = {r.name: [o.name for o in rules if o is not r and _feeds(r, o)] for r in rules}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str]:
        state[name] = 1
        path.append(name)
        for nxt in edges[name]:
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[name] = 2
        path.pop()
        return []

    for rule in rules:
        if rule.name not in state:
            found = visit(rule.name)
            if found:
                return found
    return []


def _uncovered(prefixes: Iterable[str]) -> list[str]:
    kept: list[str] = []
    for prefix in sorted(set(prefixes), key=lambda p: (len(p), p)):
        if not any(prefix.startswith(k) for k in kept):
            kept.append(prefix)
    return sorted(kept)


def _unique(items: Iterable[Any]) -> list[Any]:
    seen: dict[Any, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)
