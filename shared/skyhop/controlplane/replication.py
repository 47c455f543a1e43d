"""Continuous replication: bucket events matched against replication rules.

A created object under a rule's prefix is copied to the rule's destination
(``destination`` + the key relative to the prefix), or to each of its
``destinations``: a small object is read once and written to each, a batch
is one multicast request (the source read once for all of them). Objects up to the rule's
``inline_max_bytes`` are copied by the function itself, read pinned to the
version the event named and checked after writing; larger ones are batched,
one TransferRequest per rule and source bucket, for the gateways. A deleted
object is deleted at the destination only when the rule says so.

A batch's ``request_id`` is a hash of the rule, the bucket and the keys with
their ETags (:func:`batch_request_id`), so a duplicated bucket event yields the
same request, and the ``submit`` function's idempotency starts one job for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from typing import Literal

from pydantic import BaseModel, Field

from skyhop.controlplane.filters import Filter
from skyhop.controlplane.listing import carried_meta, matches
from skyhop.errors import NotFoundError, PreconditionFailed, SkyhopError
from skyhop.integrity import crc32c, crc_hex
from skyhop.models import ReplicationRule, TransferOptions, TransferRequest
from skyhop.stores.base import ObjectStore, open_store
from skyhop.uri import StoreURI, parse_uri

log = logging.getLogger("skyhop.replication")


class ObjectEvent(BaseModel):
    """A cloud-neutral bucket notification, parsed by each function adapter."""

    kind: Literal["created", "deleted"]
    uri: str = Field(description="the object's URI, e.g. s3://bucket/key")
    size: int | None = None
    etag: str | None = None
    bucket_tags: dict[str, str] = Field(default_factory=dict)


class ReplicationOutcome(BaseModel):
    rule: str
    source: str
    destination: str
    action: Literal["copied", "deleted", "queued", "skipped", "failed"]
    size: int | None = None
    checksum: str | None = None
    reason: str | None = None


def rule_matches(rule: ReplicationRule, uri: StoreURI, tags: dict[str, str]) -> str | None:
    """The key relative to the rule's prefix when the rule covers ``uri``, else None."""
    if rule.source_bucket is not None and rule.source_bucket != uri.bucket:
        return None
    if rule.bucket_tag is not None:
        name, _, value = rule.bucket_tag.partition("=")
        if tags.get(name) != value:
            return None
    if not uri.key.startswith(rule.prefix):  # a folder: "logs/" (see ReplicationRule)
        return None
    # the key below the prefix as it is: "in//x.txt" under "in/" is "/x.txt" and
    # lands on "out//x.txt", never on "out/x.txt" (another object)
    rel = uri.key[len(rule.prefix) :]
    if not rel or rel.endswith("/"):
        return None
    return rel if matches(rel, rule.include, rule.exclude) else None


def _dst_key(rule: ReplicationRule, rel: str, destination: str | None = None) -> StoreURI:
    dst = parse_uri(destination or rule.destination)
    prefix = dst.key if dst.is_dir_like() else dst.key + "/"
    return dst.with_key(prefix + rel)


def replicate(
    rules: list[ReplicationRule],
    events: Iterable[ObjectEvent],
    *,
    send_request: Callable[[TransferRequest], None],
    stores: Callable[[StoreURI], ObjectStore] = open_store,
) -> list[ReplicationOutcome]:
    """Apply every event to every matching rule; one outcome per (event, rule,
    destination). A rule with several destinations writes a small object to each
    (read once) and sends a batch as one multicast request."""
    outcomes: list[ReplicationOutcome] = []
    batches: dict[tuple[str, str], list[tuple[ObjectEvent, str]]] = {}
    for event in events:
        uri = parse_uri(event.uri)
        for rule in rules:
            rel = rule_matches(rule, uri, event.bucket_tags)
            if rel is None:
                continue
            dsts = [_dst_key(rule, rel, d) for d in rule.all_destinations]
            bases = [
                ReplicationOutcome(
                    rule=rule.name, source=event.uri, destination=str(dst), action="skipped"
                )
                for dst in dsts
            ]
            if event.kind == "created" and not Filter.of(rule).size_ok(event.size):
                outcomes += [
                    b.model_copy(update={"reason": "size outside the rule's limits"}) for b in bases
                ]
            elif event.kind == "deleted":
                for dst, base in zip(dsts, bases, strict=True):
                    try:
                        outcomes.append(_delete(rule, dst, base, stores))
                    except SkyhopError as exc:
                        outcomes.append(_failed(base, exc))
            elif event.size is not None and event.size > rule.inline_max_bytes:
                batches.setdefault((rule.name, uri.store_id), []).append((event, rel))
            else:
                outcomes += _copy_inline(rule, uri, event, dsts, bases, stores)
    by_name = {r.name: r for r in rules}
    for (name, store_id), items in batches.items():
        rule = by_name[name]
        src = parse_uri(items[0][0].uri)
        prefix = src.with_key(rule.prefix)
        request = TransferRequest(
            request_id=batch_request_id(rule, store_id, [(rel, e.etag) for e, rel in items]),
            source=str(prefix) if prefix.key else f"{src.store_id}/",
            destination=rule.destination,
            destinations=list(rule.destinations),
            options=TransferOptions(recursive=True, storage_class=rule.storage_class),
            keys=list(dict.fromkeys(rel for _, rel in items)),
        )
        send_request(request)
        for event, rel in items:
            for destination in rule.all_destinations:
                outcomes.append(
                    ReplicationOutcome(
                        rule=name,
                        source=event.uri,
                        destination=str(_dst_key(rule, rel, destination)),
                        action="queued",
                        size=event.size,
                        reason=f"request {request.request_id}",
                    )
                )
    return outcomes


def _failed(base: ReplicationOutcome, exc: SkyhopError) -> ReplicationOutcome:
    return base.model_copy(update={"action": "failed", "reason": str(exc)})


def batch_request_id(
    rule: ReplicationRule, store_id: str, keys: list[tuple[str, str | None]]
) -> str:
    """The same id for the same rule, bucket, keys and ETags, in any order."""
    items = sorted({(key, _norm(etag) if etag else "") for key, etag in keys})
    # a one-destination rule hashes as it always did: the same request, the same id
    target: str | list[str] = rule.destination if not rule.destinations else rule.destinations
    payload = json.dumps([1, rule.name, target, store_id, items], separators=(",", ":"))
    return "repl-" + hashlib.sha256(payload.encode()).hexdigest()[:32]


def _delete(
    rule: ReplicationRule,
    dst: StoreURI,
    base: ReplicationOutcome,
    stores: Callable[[StoreURI], ObjectStore],
) -> ReplicationOutcome:
    if not rule.propagate_deletes:
        return base.model_copy(update={"reason": "rule does not propagate deletes"})
    stores(dst).delete(dst.key)
    return base.model_copy(update={"action": "deleted"})


def _copy_inline(
    rule: ReplicationRule,
    src: StoreURI,
    event: ObjectEvent,
    dsts: list[StoreURI],
    bases: list[ReplicationOutcome],
    stores: Callable[[StoreURI], ObjectStore],
) -> list[ReplicationOutcome]:
    """Copy a small object in this function: read it once, pinned, then write it to
    each destination and read back what each wrote; one outcome per destination (a
    destination that fails fails alone)."""
    try:
        source = stores(src)
        info = source.head(src.key)
        if info is None:
            return _all(bases, reason="object is gone (deleted after the event)")
        if not Filter.of(rule).size_ok(info.size):
            return _all(bases, reason="size outside the rule's limits")
        if event.etag and info.etag and _norm(event.etag) != _norm(info.etag):
            return _all(
                bases, reason="object was overwritten after the event; its own event copies it"
            )
        try:
            data = (
                source.read_range(src.key, 0, info.size, if_match=info.etag) if info.size else b""
            )
        except (PreconditionFailed, NotFoundError) as exc:
            return _all(bases, reason=f"object changed while reading: {exc}")
    except SkyhopError as exc:
        return [_failed(base, exc) for base in bases]
    crc = crc_hex(crc32c(data))
    meta = carried_meta(info.meta, rule, info.mtime)
    out = []
    for dst, base in zip(dsts, bases, strict=True):
        try:
            written = stores(dst).put(dst.key, data, meta=meta)
        except SkyhopError as exc:
            out.append(_failed(base, exc))
            continue
        if written.size != len(data):
            out.append(
                base.model_copy(
                    update={
                        "action": "failed",
                        "reason": f"wrote {written.size} of {len(data)} bytes",
                    }
                )
            )
            continue
        src_md5, dst_md5 = info.checksums.get("md5"), written.checksums.get("md5")
        if src_md5 and dst_md5 and src_md5 != dst_md5:
            out.append(
                base.model_copy(update={"action": "failed", "reason": "md5 differs after writing"})
            )
            continue
        out.append(base.model_copy(update={"action": "copied", "size": len(data), "checksum": crc}))
    return out


def _all(bases: list[ReplicationOutcome], *, reason: str) -> list[ReplicationOutcome]:
    return [base.model_copy(update={"reason": reason}) for base in bases]


def _norm(etag: str) -> str:
    return etag.strip().strip('"').lower()
