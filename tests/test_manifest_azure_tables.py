"""The Table Storage manifest against Azurite's table endpoint: the shared
ManifestStore suite, then the layout (partitions, counters, the object index),
retention, URIs and errors that never leak azure-core."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from azure.core import exceptions as aexc
from azure.data.tables import TableServiceClient

from skyhop.errors import AccessError, NotFoundError, StoreError, ThrottledError, UsageError
from skyhop.models import JobState, TransferRequest, utcnow
from skyhop.retry import is_retryable
from skyhop.state import open_manifest
from skyhop.state.azure_tables import (
    AzureTableManifest,
    parse_aztable,
    translate,
)
from tests.suites.manifest_suite import ManifestSuite, layout, make_job


def _table() -> str:
    return "m" + uuid.uuid4().hex[:12]


class TestAzureTableManifestSuite(ManifestSuite):
    """The shared suite; small pages so that every iterator crosses page boundaries."""

    many_chunks = 300  # Azurite scans its in-memory table per query; 6 pages of 50 still page

    @pytest.fixture
    def manifest(self, azurite_server) -> AzureTableManifest:
        return AzureTableManifest(azurite_server.account, _table(), page_size=50)


@pytest.fixture
def manifest(azurite_server) -> AzureTableManifest:
    return AzureTableManifest(azurite_server.account, _table())


def _rows(azurite_server, manifest: AzureTableManifest, pk: str) -> list[dict]:
    service = TableServiceClient.from_connection_string(azurite_server.connection_string)
    table = service.get_table_client(manifest.table)
    return list(table.query_entities("PartitionKey eq @pk", parameters={"pk": pk}))


def test_layout_a_partition_per_job(azurite_server, manifest):
    job = make_job("j-layout")
    manifest.create_job(job)
    entries, chunks = layout(job.job_id, objects=2, chunks_per=2)
    manifest.put_objects(entries)
    manifest.put_chunks(chunks)
    (job_row,) = _rows(azurite_server, manifest, "jobs")
    assert job_row["RowKey"] == "j-layout" and job_row["state"] == "created"
    keys = [r["RowKey"] for r in _rows(azurite_server, manifest, "job-j-layout")]
    assert [k for k in keys if k.startswith("chk-")] == [f"chk-{i:012d}" for i in range(4)]
    assert [k for k in keys if k.startswith("obj-")] == ["obj-000000000000", "obj-000000000001"]
    assert f"idx-{1:012d}-{3:012d}" in keys
    assert {k for k in keys if k.startswith("cnt-")} <= {f"cnt-{n:02d}" for n in range(16)}


def test_a_large_job_is_split_over_properties(manifest):
    keys = [f"dir/{i:06d}/" + "x" * 60 for i in range(2000)]  # ~140 KB of JSON
    job = make_job("j-big").model_copy(
        update={
            "request": TransferRequest(
                source="s3://src-bucket/data/", destination="gs://dst/", keys=keys
            )
        }
    )
    manifest.create_job(job)
    assert manifest.get_job("j-big").request.keys == keys


def test_purge_expired_deletes_finished_jobs_past_retention(manifest):
    manifest.retention = timedelta(seconds=0)
    manifest.create_job(make_job("j-done"))
    manifest.create_job(make_job("j-live"))
    _, chunks = layout("j-done", objects=1, chunks_per=2)
    manifest.put_chunks(chunks)
    manifest.update_job("j-done", state=JobState.SUCCEEDED)
    assert manifest.purge_expired(now=utcnow() + timedelta(seconds=1)) == ["j-done"]
    assert manifest.get_job("j-done") is None and list(manifest.iter_chunks("j-done")) == []
    assert manifest.get_job("j-live") is not None
    # a finished job that is resumed loses its expiry
    manifest.retention = timedelta(days=1)
    manifest.update_job("j-live", state=JobState.FAILED)
    manifest.update_job("j-live", state=JobState.RUNNING)
    assert manifest.purge_expired(now=utcnow() + timedelta(days=2)) == []


def test_iter_jobs_by_state(manifest):
    for i, state in enumerate([JobState.RUNNING, JobState.SUCCEEDED, JobState.RUNNING]):
        manifest.create_job(make_job(f"j-{i}", state=state))
    assert sorted(j.job_id for j in manifest.iter_jobs({JobState.RUNNING})) == ["j-0", "j-2"]


def test_open_manifest_by_uri(azurite_server):
    table = _table()
    store = open_manifest(azurite_server.table_uri(table))
    assert isinstance(store, AzureTableManifest) and store.table == table
    store.create_job(make_job("j-uri"))
    assert AzureTableManifest(azurite_server.account, table).get_job("j-uri")


def test_job_ids_the_keys_cannot_hold_are_refused(manifest):
    with pytest.raises(UsageError, match="cannot be a Table Storage key"):
        manifest.create_job(make_job("j/with/slashes"))


@pytest.mark.parametrize(
    "uri, problem",
    [
        ("aztable://acct", "expected aztable://ACCOUNT/TABLE"),
        ("aztable://acct/t1/extra", "expected aztable://"),
        ("aztable://Bad-Account/table1", "is not a storage account name"),
        ("aztable://acct/1table", "is not a table name"),
        ("aztable://acct/ta", "is not a table name"),
        ("aztable://acct/tables", "is not a table name"),
        ("aztable://acct/table1?x=1", "expected aztable://"),
    ],
)
def test_bad_uris_are_one_line_usage_errors(uri, problem):
    with pytest.raises(UsageError, match=problem):
        parse_aztable(uri)


def test_parse_aztable():
    assert parse_aztable("aztable://myaccount/skyhopmanifest") == ("myaccount", "skyhopmanifest")


def _http(status: int, code: str = "") -> aexc.HttpResponseError:
    err = aexc.HttpResponseError(message=code or "error")
    err.status_code, err.error_code = status, code
    return err


@pytest.mark.parametrize(
    "exc, kind, retryable",
    [
        (aexc.ServiceRequestError("connection refused"), StoreError, True),
        (_http(503, "ServerBusy"), ThrottledError, True),
        (_http(500, "InternalError"), StoreError, True),
        (_http(403, "AuthorizationFailure"), AccessError, False),
        (aexc.ResourceNotFoundError("TableNotFound"), NotFoundError, False),
        (_http(400, "InvalidInput"), StoreError, False),
    ],
)
def test_sdk_errors_become_one_line_skyhop_errors(exc, kind, retryable):
    error = translate(exc, "reading job j in aztable://a/t")
    assert isinstance(error, kind) and "\n" not in str(error)
    assert is_retryable(error) is retryable  # what the manifest's retry loop does with it
