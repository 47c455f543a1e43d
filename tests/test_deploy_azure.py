"""``skyhop deploy azure`` against a local fake of Resource Manager and Kudu.

No emulator exists for Resource Manager or an app's Kudu (deployment)
endpoint, so these tests run the real azure-mgmt-resource and azure-mgmt-web
clients (a fake token credential, ``base_url`` pointed at tests/fakes/azure_web.py
over TLS on 127.0.0.1) and assert the requests they send (plan SKU, site kind,
runtime and app settings, the zip pushed to Kudu with a bearer token, the Event
Grid subscription's destination and filter) and the life cycle: created, then
updated, then deleted. The queues, and the Table Storage manifest that is the
default, are created in Azurite.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
import zipfile

import pytest
from azure.core.credentials import AccessToken
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from skyhop.compute.azure_wheel import AzureWheel, signed
from skyhop.compute.package import build_wheel, sha256_of
from skyhop.deploy.azure import AzureDeployConfig, AzureDeployer
from skyhop.deploy.package import build_source
from skyhop.errors import AccessError, SkyhopError, UsageError
from skyhop.models import ReplicationConfig, ReplicationRule
from tests.fakes.azure_web import FakeWeb

SUB = "00000000-0000-0000-0000-000000000001"
ACCOUNT_ID = (
    f"/subscriptions/{SUB}/resourceGroups/data/providers/Microsoft.Storage/storageAccounts/srcacct1"
)


class FakeCredential:
    def get_token(self, *scopes, **kwargs):
        return AccessToken("fake-token", int(time.time()) + 3600)


@pytest.fixture
def fake(tmp_path):
    server = FakeWeb()
    server.start_tls(tmp_path / "tls")
    yield server
    server.close()


@pytest.fixture
def cfg(azurite_server):
    tag = uuid.uuid4().hex[:8]
    return AzureDeployConfig(
        subscription_id=SUB,
        resource_group="skyhop-rg",
        location="westeurope",
        app_name=f"skyhop-{tag}",
        storage_connection_string=azurite_server.connection_string,
        manifest="dynamodb://skyhop-manifest?region=eu-west-1",
        rules=ReplicationConfig(
            rules=[ReplicationRule(name="r1", source_bucket="in", destination="gs://bkt-out/")]
        ),
        requests_queue=f"req-{tag}",
        events_queue=f"evt-{tag}",
        results_queue=f"res-{tag}",
        event_sources=[ACCOUNT_ID],
    )


def deployer(fake, cfg, **kw):
    return AzureDeployer(
        cfg,
        credential=FakeCredential(),
        base_url=fake.endpoint,
        scm_url=fake.endpoint,
        client_kwargs={"connection_verify": fake.ca_bundle},
        poll_interval=0.01,
        **kw,
    )


def _queues(azurite_server) -> set[str]:
    service = QueueServiceClient.from_connection_string(azurite_server.connection_string)
    return {q.name for q in service.list_queues()}


def test_deploy_creates_updates_and_deletes_the_function_app(fake, cfg, azurite_server, tmp_path):
    d = deployer(fake, cfg)
    archive = build_source("azure")
    report = d.deploy(archive)

    assert {cfg.requests_queue, cfg.events_queue, cfg.results_queue} <= _queues(azurite_server)
    assert {r.action for r in report.functions} == {"created"}
    assert sorted(r.function_id.split("/")[1] for r in report.functions) == [
        "on_blob_event",
        "on_gateway_event",
        "on_request",
        "reaper",
    ]

    plan = fake.of_type("serverfarms")[f"{cfg.app_name}-plan"]
    assert plan["sku"] == {"name": "Y1", "tier": "Dynamic"} and plan["properties"]["reserved"]
    site = fake.of_type("sites")[cfg.app_name]
    assert site["kind"] == "functionapp,linux"
    props = site["properties"]
    assert props["serverFarmId"].lower().endswith(f"/serverfarms/{cfg.app_name}-plan")
    assert props["httpsOnly"] is True
    config = props["siteConfig"]
    assert config["linuxFxVersion"] == "Python|3.11" and config["ftpsState"] == "Disabled"
    settings = {s["name"]: s["value"] for s in config["appSettings"]}
    assert settings["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert settings["FUNCTIONS_EXTENSION_VERSION"] == "~4"
    assert settings["AzureWebJobsStorage"] == azurite_server.connection_string
    assert settings["SCM_DO_BUILD_DURING_DEPLOYMENT"] == "true"
    assert settings["SKYHOP_REQUESTS_QUEUE_NAME"] == cfg.requests_queue
    assert settings["SKYHOP_EVENTS_QUEUE_NAME"] == cfg.events_queue
    assert settings["SKYHOP_EVENTS_QUEUE"] == f"azq://devstoreaccount1/{cfg.events_queue}"
    assert settings["SKYHOP_COMPUTE"] == "azure"
    compute = json.loads(settings["SKYHOP_COMPUTE_OPTIONS"])
    assert compute.pop("subscription_id") == SUB
    # issue 19 item 12: the gateways install this deployment's own wheel, by hash, from
    # the app's storage account (a SAS URL signed at each launch)
    wheel = compute.pop("wheel")
    assert compute == {}
    digest = sha256_of(build_wheel(tmp_path / "wheel"))
    assert wheel["account"] == "devstoreaccount1" and wheel["sha256"] == digest
    assert wheel["blob"] == f"wheels/{digest}/{wheel['filename']}"
    blob = BlobServiceClient.from_connection_string(
        azurite_server.connection_string
    ).get_blob_client(wheel["container"], wheel["blob"])
    assert hashlib.sha256(blob.download_blob().readall()).hexdigest() == digest
    assert f"gateway wheel az://devstoreaccount1/{wheel['container']}/{wheel['blob']}" in (
        report.notes
    )
    assert signed(AzureWheel.model_validate(wheel)).sha256 == digest
    assert ReplicationConfig.model_validate_json(settings["SKYHOP_RULES"]) == cfg.rules

    # the archive went to Kudu, with a bearer token, and was polled to completion
    (pushed,) = fake.deployments
    assert pushed == archive.data
    names = zipfile.ZipFile(io.BytesIO(pushed)).namelist()
    assert {"function_app.py", "host.json", "functions/common.py", "requirements.txt"} <= set(names)
    (push,) = fake.calls("POST", "/api/zipdeploy")
    assert (
        push.query == {"isAsync": ["true"]} and push.headers["authorization"] == "Bearer fake-token"
    )
    assert len(fake.calls("GET", "/api/deployments/latest")) == 2

    (sub,) = fake.of_type("eventSubscriptions").values()
    assert sub["id"].lower().startswith(ACCOUNT_ID.lower())
    dest = sub["properties"]["destination"]
    assert dest["endpointType"] == "AzureFunction"
    assert (
        dest["properties"]["resourceId"].lower() == f"{site['id']}/functions/on_blob_event".lower()
    )
    assert sub["properties"]["filter"]["includedEventTypes"] == [
        "Microsoft.Storage.BlobCreated",
        "Microsoft.Storage.BlobDeleted",
    ]

    again = d.deploy(archive)
    assert {r.action for r in again.functions} == {"updated"}
    assert not [n for n in again.notes if n.startswith("created queue")]
    assert len(fake.deployments) == 2

    gone = d.destroy()
    assert {r.action for r in gone.functions} == {"deleted"}
    assert fake.of_type("sites") == {} and fake.of_type("serverfarms") == {}
    assert fake.of_type("eventSubscriptions") == {}
    assert {r.action for r in d.destroy().functions} == {"absent"}


def test_the_default_manifest_is_table_storage_in_the_apps_account(fake, cfg, azurite_server):
    table = "m" + uuid.uuid4().hex[:12]
    d = deployer(fake, cfg.model_copy(update={"manifest": f"aztable://devstoreaccount1/{table}"}))
    report = d.deploy(build_source("azure"))
    assert f"created table {table}" in report.notes
    assert f"manifest aztable://devstoreaccount1/{table}" in report.notes
    service = TableServiceClient.from_connection_string(azurite_server.connection_string)
    assert table in {t.name for t in service.list_tables()}
    assert f"created table {table}" not in d.deploy(build_source("azure")).notes

    default = cfg.model_copy(update={"manifest": None})
    assert default.manifest_uri == "aztable://devstoreaccount1/skyhopmanifest"
    report = deployer(fake, default).deploy(build_source("azure"))
    settings = {
        s["name"]: s["value"]
        for s in fake.of_type("sites")[cfg.app_name]["properties"]["siteConfig"]["appSettings"]
    }
    assert settings["SKYHOP_MANIFEST"] == "aztable://devstoreaccount1/skyhopmanifest"
    assert not any("DynamoDB" in n or "private" in n for n in report.notes)


def test_a_dynamodb_manifest_stays_possible(fake, cfg):
    report = deployer(fake, cfg).deploy(build_source("azure"))
    assert any("need AWS credentials for DynamoDB" in n for n in report.notes)
    settings = {
        s["name"]: s["value"]
        for s in fake.of_type("sites")[cfg.app_name]["properties"]["siteConfig"]["appSettings"]
    }
    assert settings["SKYHOP_MANIFEST"] == "dynamodb://skyhop-manifest?region=eu-west-1"


def test_failed_build_is_one_line(fake, cfg):
    fake.fail_next_deployment = True
    with pytest.raises(SkyhopError, match=r"^zip deploy to skyhop-\w+ failed: Oryx build failed$"):
        deployer(fake, cfg).deploy(build_source("azure"))


def test_bad_inputs(fake, cfg):
    with pytest.raises(UsageError, match="not a storage account resource id"):
        deployer(fake, cfg.model_copy(update={"event_sources": ["srcacct1"]}))
    with pytest.raises(UsageError, match="gcp archive cannot be deployed"):
        deployer(fake, cfg).deploy(build_source("gcp"))
    broken = AzureDeployConfig.model_validate(
        {**cfg.model_dump(), "storage_connection_string": "UseDevelopmentStorage=true"}
    )
    with pytest.raises(UsageError, match="names no AccountName"):
        broken.app_settings()
    # the connection string is a secret: never in a repr or a dump
    assert azure_key_hidden(cfg)


def azure_key_hidden(cfg: AzureDeployConfig) -> bool:
    secret = cfg.storage_connection_string.get_secret_value()
    return secret not in repr(cfg) and secret not in cfg.model_dump_json()


def test_access_denied_is_one_line(fake, cfg, azurite_server):
    class NoToken(FakeCredential):
        def get_token(self, *scopes, **kwargs):
            return AccessToken("", int(time.time()) + 3600)

    d = deployer(fake, cfg)
    d._credential = NoToken()
    with pytest.raises(AccessError, match=r"^zip deploy to .*: access denied \(401"):
        d.deploy(build_source("azure"))


def test_cli_deploys_to_azure(fake, cfg, monkeypatch, capsys, azurite_server):
    from skyhop import cli
    from skyhop.deploy import cli as deploy_cli

    monkeypatch.setattr(deploy_cli, "azure_deployer", lambda config: deployer(fake, config))
    args = ["deploy", "azure", "--subscription", SUB, "--location", "westeurope"]
    args += ["--app", cfg.app_name, "--events-from", ACCOUNT_ID]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert f"{cfg.app_name}/on_request" in out and "created" in out
    assert "manifest aztable://devstoreaccount1/skyhopmanifest" in out
    assert azurite_server.connection_string not in out
    assert list(fake.of_type("sites")) == [cfg.app_name]
    from skyhop import remotes

    profile = remotes.find_control_plane("azure")[1]
    assert profile.requests_queue == "azq://devstoreaccount1/skyhop-requests"
    assert profile.manifest == "aztable://devstoreaccount1/skyhopmanifest"
    assert profile.region == "westeurope" and profile.stack == f"skyhop/{cfg.app_name}"
    assert "control-plane profile [azure] written to" in out


def test_cli_azure_bad_input(fake, monkeypatch):
    from tests.fixtures.cli import run_cli

    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    base = ["deploy", "azure", "--subscription", SUB, "--location", "westeurope", "--app", "a1b"]
    result = run_cli(*base, "--manifest", "dynamodb://t")
    assert result.code == 2 and "--storage-connection-string is required" in result.stderr
    conn = "AccountName=acct1;AccountKey=eA==;EndpointSuffix=core.windows.net"
    result = run_cli(
        *base,
        "--manifest",
        "dynamodb://t",
        "--storage-connection-string",
        conn,
        "--events-from",
        "acct1",
    )
    assert result.code == 2 and result.stderr.count("\n") == 1
    assert "not a storage account resource id" in result.stderr
    result = run_cli(
        *[a if a != "a1b" else "Bad_App" for a in base],
        "--manifest",
        "dynamodb://t",
        "--storage-connection-string",
        conn,
    )
    assert result.code == 2 and "--app: String should match" in result.stderr
    result = run_cli(*base, "--manifest", "aztable://acct1", "--storage-connection-string", conn)
    assert result.code == 2 and "expected aztable://ACCOUNT/TABLE" in result.stderr
    assert fake.requests == []


@pytest.mark.parametrize(
    ("conn", "account"),
    [
        (
            "DefaultEndpointsProtocol=https;AccountName=acct1;AccountKey=abc==;"
            "EndpointSuffix=core.windows.net",
            "acct1",
        ),
        ("accountname = acct2 ; AccountKey=abc==", "acct2"),
        (
            "BlobEndpoint=https://acct3.blob.core.windows.net/;SharedAccessSignature=sv=1&sig=x",
            "acct3",
        ),
        ("QueueEndpoint=https://acct4.queue.core.windows.net;SharedAccessSignature=sv=1", "acct4"),
        (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=k==;"
            "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;",
            "devstoreaccount1",
        ),
        (
            "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;SharedAccessSignature=x",
            "devstoreaccount1",
        ),
        ("UseDevelopmentStorage=true", None),  # no account named: refused by both
        ("AccountKey=abc==", None),
    ],
)
def test_deploy_reads_a_connection_string_as_the_stores_do(conn: str, account: str | None):
    """The deploy's account (its manifest and queue URIs) is the one the Azure kit
    reads from the same string, the one the functions' clients then use."""
    from skyhop.clouds.azure import connection_string_account

    assert connection_string_account(conn) == account
    config = AzureDeployConfig(
        subscription_id=SUB,
        location="westeurope",
        app_name="skyhop-app",
        storage_connection_string=conn,
    )
    if account is None:
        with pytest.raises(UsageError, match="names no AccountName"):
            config.app_settings()
    else:
        assert config.account == account
        assert config.app_settings()["SKYHOP_REQUESTS_QUEUE"] == f"azq://{account}/skyhop-requests"
