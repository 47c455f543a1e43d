"""The Firestore manifest against the Firestore emulator (``gcloud emulators firestore
start``): the shared ManifestStore suite, then the layout, TTL fields, URIs and errors
that never leak google.api_core."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore

from skyhop.errors import AccessError, NotFoundError, StoreError, ThrottledError, UsageError
from skyhop.models import JobState
from skyhop.retry import is_retryable
from skyhop.state import open_manifest
from skyhop.state.firestore import (
    CHUNKS,
    COUNTERS,
    OBJECTS,
    TTL_FIELD,
    FirestoreManifest,
    parse_firestore,
    translate,
)
from tests.suites.manifest_suite import ManifestSuite, layout, make_job


def _collection() -> str:
    return "m-" + uuid.uuid4().hex[:12]


class TestFirestoreManifestSuite(ManifestSuite):
    """The shared suite; small pages so that every iterator crosses page boundaries."""

    many_chunks = 300  # 6 pages of 50

    @pytest.fixture
    def manifest(self, firestore_server) -> FirestoreManifest:
        return FirestoreManifest(firestore_server.project, collection=_collection(), page_size=50)


@pytest.fixture
def manifest(firestore_server) -> FirestoreManifest:
    return FirestoreManifest(firestore_server.project, collection=_collection())


def _raw(manifest: FirestoreManifest) -> firestore.Client:
    return firestore.Client(project=manifest.project, database=manifest.database)


def test_layout_one_document_per_record_under_the_job(manifest):
    job = make_job("j-layout")
    manifest.create_job(job)
    entries, chunks = layout(job.job_id, objects=2, chunks_per=2)
    manifest.put_objects(entries)
    manifest.put_chunks(chunks)
    jobs = _raw(manifest).collection(manifest.collection)
    doc = jobs.document("j-layout").get()
    assert doc.get("state") == "created" and doc.get(TTL_FIELD) is None
    chunk_ids = [d.id for d in jobs.document("j-layout").collection(CHUNKS).stream()]
    shards = {d.id: d.to_dict() for d in jobs.document("j-layout").collection(COUNTERS).stream()}
    assert set(shards) == {"00", "01", "02", "03"}  # chunk_id % 16 and object_id % 16
    assert sum(s.get("c_pending", 0) for s in shards.values()) == 4
    assert sum(s.get("o_bytes", 0) for s in shards.values()) == 400
    assert chunk_ids == [f"{i:012d}" for i in range(4)]
    chunk = jobs.document("j-layout").collection(CHUNKS).document(f"{3:012d}").get()
    assert (chunk.get("object_id"), chunk.get("length"), chunk.get("state")) == (1, 100, "pending")
    assert chunk.get(TTL_FIELD) is not None  # the safety net of an abandoned job
    objects = list(jobs.document("j-layout").collection(OBJECTS).stream())
    assert [o.get("size") for o in objects] == [200, 200]


def test_finished_job_gets_its_ttl_and_loses_it_when_resumed(manifest):
    manifest.retention = timedelta(days=2)
    manifest.create_job(make_job("j-ttl"))
    doc = _raw(manifest).collection(manifest.collection).document("j-ttl")
    manifest.update_job("j-ttl", state=JobState.SUCCEEDED)
    expires = doc.get().get(TTL_FIELD)
    job = manifest.get_job("j-ttl")
    assert timedelta(days=1) < expires - job.updated_at <= timedelta(days=2, seconds=5)
    manifest.update_job("j-ttl", state=JobState.RUNNING)
    assert doc.get().get(TTL_FIELD) is None


def test_iter_jobs_by_state(manifest):
    for i, state in enumerate([JobState.RUNNING, JobState.SUCCEEDED, JobState.RUNNING]):
        manifest.create_job(make_job(f"j-{i}", state=state))
    assert sorted(j.job_id for j in manifest.iter_jobs({JobState.RUNNING})) == ["j-0", "j-2"]


def test_open_manifest_by_uri(firestore_server):
    collection = _collection()
    store = open_manifest(firestore_server.manifest_uri(collection))
    assert isinstance(store, FirestoreManifest) and store.collection == collection
    store.create_job(make_job("j-uri"))
    assert FirestoreManifest(firestore_server.project, collection=collection).get_job("j-uri")


@pytest.mark.parametrize(
    "uri, problem",
    [
        ("firestore://proj", "expected firestore://PROJECT/DATABASE/COLLECTION"),
        ("firestore://proj/(default)", "expected firestore://"),
        ("firestore://proj/(default)/c/extra", "expected firestore://"),
        ("firestore://Bad_Project/(default)/c", "is not a Google Cloud project id"),
        ("firestore://my-project/Bad_DB/c", "is not a Firestore database id"),
        ("firestore://my-project/(default)/__c__", "is not a collection id"),
        ("firestore://my-project/(default)/c?x=1", "expected firestore://"),
    ],
)
def test_bad_uris_are_one_line_usage_errors(uri, problem):
    with pytest.raises(UsageError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        parse_firestore(uri)


def test_parse_firestore():
    assert parse_firestore("firestore://my-project/(default)/skyhop-manifest") == (
        "my-project",
        "(default)",
        "skyhop-manifest",
    )


@pytest.mark.parametrize(
    "exc, kind, retryable",
    [
        (gexc.ServiceUnavailable("connect failed"), StoreError, True),
        (gexc.DeadlineExceeded("slow"), StoreError, True),
        (gexc.Aborted("contention"), StoreError, True),
        (gexc.ResourceExhausted("quota"), ThrottledError, True),
        (gexc.PermissionDenied("no role"), AccessError, False),
        (gexc.NotFound("database (default) does not exist"), NotFoundError, False),
        (gexc.FailedPrecondition("The query requires an index"), StoreError, False),
        (gexc.InvalidArgument("bad"), StoreError, False),
    ],
)
def test_sdk_errors_become_one_line_skyhop_errors(exc, kind, retryable):
    error = translate(exc, "reading job j in firestore://p/(default)/c")
    assert isinstance(error, kind) and "\n" not in str(error)
    assert is_retryable(error) is retryable  # what the manifest's retry loop does with it
    assert str(error).startswith("reading job j in firestore://p/(default)/c: ")


def test_a_missing_index_says_so():
    error = translate(gexc.FailedPrecondition("The query requires an index"), "counting")
    assert "index is missing" in str(error)
