"""The delete phase of ``skyhop sync --delete``.

While a sync is planned, the destination's objects that are absent at the
source go to a :class:`DeleteSpool`, one JSON line each, beside the job's other
files. :func:`delete_phase` reads them back from :meth:`ControlPlane.finish
<skyhop.controlplane.service.ControlPlane.finish>`, after the final listing
check verified every copy, and deletes them (none at all when a copy failed or
more than ``--max-delete`` would go). A job planned on another machine (a
deployed control plane's submit function; another invocation finishes it) has
no spool here: its deletes are planned again from fresh listings (:func:`replan`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from skyhop.config import jobs_dir, private_opener
from skyhop.controlplane import fanout
from skyhop.controlplane.filters import Filter
from skyhop.controlplane.keyorder import as_prefix, merge, relative
from skyhop.controlplane.report import CsvReport
from skyhop.errors import SkyhopError
from skyhop.models import Job, ObjectReport, SyncSummary
from skyhop.state.base import ManifestStore
from skyhop.stores.base import ObjectStore
from skyhop.uri import StoreURI


class DeleteSpool:
    """Planned deletes of a job, one JSON line each, beside the job's other files."""

    def __init__(self, job_id: str) -> None:
        self.path: Path = jobs_dir() / f"{job_id}.deletes.jsonl"
        self._fh: TextIO | None = None

    def add(self, key: str, size: int) -> None:
        if self._fh is None:
            self._fh = open(self.path, "a", encoding="utf-8", opener=private_opener)  # noqa: SIM115 - held open across calls, closed by close()
        self._fh.write(json.dumps({"key": key, "size": size}) + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __iter__(self) -> Iterator[tuple[str, int]]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                item = json.loads(line)
                yield item["key"], int(item["size"])

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def delete_phase(
    manifest: ManifestStore,
    store: Callable[[StoreURI], ObjectStore],
    job: Job,
    rows: CsvReport,
    *,
    copies_ok: bool,
) -> Job:
    """Delete the job's planned deletes, after every copy was verified.

    Called by :meth:`ControlPlane.finish`. Does nothing (and says why in the
    job's sync summary) when a copy failed or more than ``--max-delete`` objects
    would go."""
    summary = (job.sync or SyncSummary()).model_copy()
    spool = DeleteSpool(job.job_id)
    # planned elsewhere (a control plane's submit function): planned again here
    elsewhere = bool(summary.to_delete) and not spool.path.exists()
    if elsewhere and copies_ok:
        summary.to_delete = replan(store, job, spool)
        if summary.to_delete == 0:
            spool.remove()
            return manifest.update_job(job.job_id, sync=summary)
    if summary.to_delete == 0 or not (elsewhere or spool.path.exists()):
        spool.remove()
        return job
    options = job.request.options
    if not copies_ok:
        summary.deletes_skipped = (
            f"not every copy was verified; none of the {summary.to_delete} planned deletes ran"
        )
    elif options.max_delete is not None and summary.to_delete > options.max_delete:
        summary.deletes_skipped = (
            f"{summary.to_delete} deletes planned, more than --max-delete {options.max_delete}"
        )
    if summary.deletes_skipped:
        spool.remove()
        return manifest.update_job(job.job_id, sync=summary)
    dst = store(job.request.destination_uri)

    def delete(item: tuple[str, int]) -> tuple[str, int, str | None]:
        key, size = item
        try:
            dst.delete(key)
        except SkyhopError as exc:
            return key, size, str(exc)
        return key, size, None

    for key, size, error in fanout.ordered_map(delete, iter(spool), workers=8, window=64):
        if error is None:
            summary.deleted += 1
            rows.write(
                ObjectReport(key=key, size=size, action="deleted", reason="absent at the source")
            )
        else:
            summary.delete_failures += 1
            rows.write(ObjectReport(key=key, size=size, action="failed", error=f"delete: {error}"))
    spool.remove()
    return manifest.update_job(job.job_id, sync=summary)


def replan(store: Callable[[StoreURI], ObjectStore], job: Job, spool: DeleteSpool) -> int:
    """Plan a sync's deletes again into ``spool`` from fresh listings of both sides:
    the destination's objects under the prefix that the source lacks and the
    filters select. For a job whose planning ran on another machine (its spool is
    there); the copies are verified by now, so none of them is taken for gone.
    Returns how many."""
    request = job.request
    src_uri, dst_uri = request.source_uri, request.destination_uri
    src_prefix, dst_prefix = as_prefix(src_uri.key), as_prefix(dst_uri.key)
    selected = Filter.of(request.options)
    pairs = merge(
        relative(fanout.list_parallel(store(src_uri), src_prefix), src_prefix, str(src_uri)),
        relative(fanout.list_parallel(store(dst_uri), dst_prefix), dst_prefix, str(dst_uri)),
    )
    count = 0
    for rel, s, d in pairs:
        if s is None and d is not None and d.error is None and selected.accepts(rel, d):
            spool.add(d.key, d.size)
            count += 1
    spool.close()
    return count
