"""``skyhop deploy gcp`` against a local fake of the Cloud Functions v2 REST API.

No emulator exists for the Cloud Functions API, so these tests run the real
google-cloud-functions client (REST transport, anonymous credentials,
``api_endpoint`` pointed at tests/fakes/gcf_api.py on 127.0.0.1) and assert the
requests it sends (function ids, entry points, the staged source, Eventarc
triggers with their retry policy and bucket filters, environment) and the life
cycle: created, then updated in place, then deleted. The source archive is
staged in the GCS emulator; topics are created in the Pub/Sub emulator. The
Firestore manifest's TTL policies go through the real
google-cloud-firestore admin client's request types to a recording stand-in
(:class:`RecordingFirestoreAdmin`): the Firestore emulator serves no admin API.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import functions_v2, storage

from skyhop.compute.package import build_wheel, sha256_of
from skyhop.deploy.gcp import GCPDeployConfig, GCPDeployer, plan_functions
from skyhop.deploy.package import build_source, requirements
from skyhop.errors import AccessError, UsageError
from skyhop.models import ReplicationConfig, ReplicationRule
from tests.fakes.gcf_api import FakeCloudFunctions
from tests.fakes.http import Reply

PROJECT = "skyhop-test"
# the REST transport sends enums as their numbers
RETRY = functions_v2.EventTrigger.RetryPolicy.RETRY_POLICY_RETRY.value
INTERNAL_ONLY = functions_v2.ServiceConfig.IngressSettings.ALLOW_INTERNAL_ONLY.value


@pytest.fixture
def fake():
    server = FakeCloudFunctions()
    server.endpoint = server.start()
    yield server
    server.close()


@pytest.fixture
def staging(gcs_bucket):
    return gcs_bucket.removeprefix("gs://").rstrip("/")


def config(staging: str, **kw) -> GCPDeployConfig:
    rules = ReplicationConfig(
        rules=[
            ReplicationRule(name="logs", source_bucket="src-logs", destination="s3://dst-logs/"),
            ReplicationRule(name="tagged", bucket_tag="replicate=yes", destination="gs://dst-b/"),
        ]
    )
    values = dict(
        project=PROJECT,
        region="europe-west1",
        staging_bucket=staging,
        manifest="dynamodb://skyhop-manifest?region=eu-west-1",
        rules=rules,
        buckets=["src-extra"],
    )
    values.update(kw)
    return GCPDeployConfig(**values)


class RecordingFirestoreAdmin:
    """Records create_index / update_field requests (no emulator serves the Firestore
    Admin API); an index asked for twice answers AlreadyExists, as Firestore does."""

    def __init__(self) -> None:
        self.indexes: list[tuple[str, list[str]]] = []
        self.ttl: list[str] = []

    def create_index(self, request):
        from google.api_core.exceptions import AlreadyExists

        key = (request["parent"], [f.field_path for f in request["index"].fields])
        if key in self.indexes:
            raise AlreadyExists("index already exists")
        self.indexes.append(key)

    def update_field(self, request):
        assert request["update_mask"].paths == ["ttl_config"]
        assert request["field"].ttl_config is not None
        self.ttl.append(request["field"].name)


def deployer(fake, cfg: GCPDeployConfig, **kw) -> GCPDeployer:
    kw.setdefault("firestore_admin", RecordingFirestoreAdmin())
    return GCPDeployer(
        cfg,
        credentials=AnonymousCredentials(),
        api_endpoint=fake.endpoint,
        ensure_topics=False,
        **kw,
    )


def test_source_archive_holds_the_app_the_core_and_requirements():
    archive = build_source("gcp")
    names = set(zipfile.ZipFile(io.BytesIO(archive.data)).namelist())
    assert {"main.py", "functions/__init__.py", "functions/common.py", "requirements.txt"} <= names
    assert {"skyhop/__init__.py", "skyhop/controlplane/serverless.py", "skyhop/py.typed"} <= names
    assert not any("__pycache__" in n or n.startswith("functions/aws") for n in names)
    reqs = zipfile.ZipFile(io.BytesIO(archive.data)).read("requirements.txt").decode().split()
    assert "functions-framework>=3.5" in reqs and "pydantic>=2.6" in reqs
    assert not any(r.startswith(("azure-", "moto", "pytest", "skyhop")) for r in reqs)
    # the same inputs give the same bytes (the archive is named by its hash)
    assert build_source("gcp").sha256 == archive.sha256
    azure = build_source("azure")
    assert {"function_app.py", "host.json"} <= set(
        zipfile.ZipFile(io.BytesIO(azure.data)).namelist()
    )
    assert "azure-mgmt-web>=7" not in requirements("gcp")


def test_missing_functions_dir_is_one_line(tmp_path):
    with pytest.raises(UsageError, match="no skyhop functions/ directory at"):
        build_source("gcp", functions_dir=tmp_path)


def test_plan_names_one_function_pair_per_bucket(staging):
    plans = plan_functions(config(staging))
    ids = [p.function_id for p in plans]
    assert ids[:2] == ["skyhop-requests", "skyhop-gateway-events"] and ids[-1] == "skyhop-reaper"
    gcs = [p for p in plans if p.trigger == "gcs"]
    assert sorted({p.bucket for p in gcs}) == ["src-extra", "src-logs"]  # tag rules need --bucket
    assert all(len(p.function_id) <= 63 for p in plans)


def test_deploy_creates_then_updates_then_deletes(fake, staging, tmp_path):
    cfg = config(staging)
    d = deployer(fake, cfg)
    archive = build_source("gcp")
    report = d.deploy(archive)

    # staged in the bucket, named by hash, and referenced by generation
    blob = (
        storage.Client(project=PROJECT, credentials=AnonymousCredentials())
        .bucket(staging)
        .get_blob(f"skyhop-deploy/{archive.name}")
    )
    assert blob.download_as_bytes() == archive.data
    assert report.source == f"gs://{staging}/skyhop-deploy/{archive.name}#{blob.generation}"

    plans = plan_functions(cfg)
    assert [(r.function_id, r.action) for r in report.functions] == [
        (p.function_id, "created") for p in plans
    ]
    creates = fake.calls("POST", "/functions")
    assert [c.query["functionId"][0] for c in creates] == [p.function_id for p in plans]
    by_id = {c.query["functionId"][0]: c.body for c in creates}

    req = by_id["skyhop-requests"]
    assert req["buildConfig"]["entryPoint"] == "on_request"
    assert req["buildConfig"]["runtime"] == "python311"
    assert req["buildConfig"]["source"]["storageSource"] == {
        "bucket": staging,
        "object": f"skyhop-deploy/{archive.name}",
        "generation": str(blob.generation),
    }
    assert req["eventTrigger"]["eventType"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert req["eventTrigger"]["pubsubTopic"] == f"projects/{PROJECT}/topics/skyhop-requests"
    assert req["eventTrigger"]["retryPolicy"] == RETRY
    env = req["serviceConfig"]["environmentVariables"]
    assert env["SKYHOP_MANIFEST"] == "dynamodb://skyhop-manifest?region=eu-west-1"
    assert env["SKYHOP_COMPUTE"] == "gcp"
    compute = json.loads(env["SKYHOP_COMPUTE_OPTIONS"])
    # issue 19 item 12: the gateways install this deployment's own wheel, by hash
    wheel = compute.pop("wheel")
    assert compute == {"project": PROJECT}
    digest = sha256_of(build_wheel(tmp_path / "wheel"))
    assert wheel["bucket"] == f"skyhop-gateways-{PROJECT}" and wheel["sha256"] == digest
    assert wheel["name"] == f"wheels/{digest}/{wheel['filename']}"
    stored = storage.Client(project=PROJECT, credentials=AnonymousCredentials())
    uploaded = stored.bucket(wheel["bucket"]).blob(wheel["name"]).download_as_bytes()
    assert hashlib.sha256(uploaded).hexdigest() == digest
    assert f"gateway wheel gs://{wheel['bucket']}/{wheel['name']}" in report.notes
    assert env["SKYHOP_EVENTS_QUEUE"] == f"pubsub://{PROJECT}/skyhop-events"
    assert env["SKYHOP_REQUESTS_QUEUE"] == f"pubsub://{PROJECT}/skyhop-requests"
    assert ReplicationConfig.model_validate_json(env["SKYHOP_RULES"]) == cfg.rules
    assert req["serviceConfig"]["ingressSettings"] == INTERNAL_ONLY

    events = by_id["skyhop-gateway-events"]
    assert events["buildConfig"]["entryPoint"] == "on_gateway_event"
    assert events["eventTrigger"]["pubsubTopic"].endswith("/topics/skyhop-events")
    objs = {k: v for k, v in by_id.items() if "-obj-" in k}
    assert len(objs) == 4
    for body in objs.values():
        trigger = body["eventTrigger"]
        assert body["buildConfig"]["entryPoint"] == "on_gcs_object"
        assert trigger["eventType"] in (
            "google.cloud.storage.object.v1.finalized",
            "google.cloud.storage.object.v1.deleted",
        )
        assert trigger["retryPolicy"] == RETRY
        ((flt),) = trigger["eventFilters"]
        assert flt["attribute"] == "bucket" and flt["value"] in ("src-logs", "src-extra")
    reaper = by_id["skyhop-reaper"]
    assert "eventTrigger" not in reaper and reaper["buildConfig"]["entryPoint"] == "reaper"
    assert any("Cloud Scheduler" in n and "skyhop-reaper" in n for n in report.notes)

    # a second deploy updates in place, with an update mask
    again = d.deploy(archive)
    assert {r.action for r in again.functions} == {"updated"}
    patches = fake.calls("PATCH")
    assert len(patches) == len(plans)
    masks = {p.path.rsplit("/", 1)[-1]: p.query["updateMask"][0].split(",") for p in patches}
    assert (
        "eventTrigger" in masks["skyhop-requests"] and "eventTrigger" not in masks["skyhop-reaper"]
    )
    assert "buildConfig" in masks["skyhop-reaper"]
    assert len(fake.functions) == len(plans)

    gone = d.destroy()
    assert {r.action for r in gone.functions} == {"deleted"} and fake.functions == {}
    assert {r.action for r in d.destroy().functions} == {"absent"}


def test_the_default_manifest_is_firestore_in_the_same_project(fake, staging):
    cfg = config(staging, manifest=None, buckets=[], rules=None)
    assert cfg.manifest_uri == f"firestore://{PROJECT}/(default)/skyhop-manifest"
    admin = RecordingFirestoreAdmin()
    report = deployer(fake, cfg, firestore_admin=admin).deploy(build_source("gcp"))
    (create,) = fake.calls("POST", "/functions")[:1]
    env = create.body["serviceConfig"]["environmentVariables"]
    assert env["SKYHOP_MANIFEST"] == f"firestore://{PROJECT}/(default)/skyhop-manifest"
    root = f"projects/{PROJECT}/databases/(default)/collectionGroups"
    assert admin.ttl == [
        f"{root}/skyhop-manifest/fields/expires_at",
        f"{root}/objects/fields/expires_at",
        f"{root}/chunks/fields/expires_at",
        f"{root}/counters/fields/expires_at",
    ]
    assert admin.indexes == []  # no query needs a composite index
    assert "the functions' service account needs roles/datastore.user" in " ".join(report.notes)
    (note,) = [n for n in report.notes if n.startswith("manifest ")]
    assert "TTL chunks.expires_at" in note and "TTL counters.expires_at" in note
    again = deployer(fake, cfg, firestore_admin=admin).deploy(build_source("gcp"))
    assert not any("DynamoDB" in n or "private" in n for n in again.notes)


def test_a_dynamodb_manifest_stays_possible(fake, staging):
    admin = RecordingFirestoreAdmin()
    report = deployer(fake, config(staging), firestore_admin=admin).deploy(build_source("gcp"))
    assert any("need AWS credentials for DynamoDB" in n for n in report.notes)
    assert admin.indexes == [] and admin.ttl == []


def test_sqlite_manifest_gets_a_warning_and_wrong_archive_is_refused(fake, staging):
    d = deployer(
        fake, config(staging, manifest="sqlite:///tmp/skyhop/manifest.db", buckets=[], rules=None)
    )
    report = d.deploy(build_source("gcp"))
    assert any("private to each function instance" in n for n in report.notes)
    assert [r.function_id for r in report.functions] == [
        "skyhop-requests",
        "skyhop-gateway-events",
        "skyhop-reaper",
    ]
    with pytest.raises(UsageError, match="azure archive cannot be deployed"):
        d.deploy(build_source("azure"))


def test_api_errors_are_one_line(fake, staging):
    d = deployer(fake, config(staging, prefix="skyhop"))
    denied = Reply(
        403, {"error": {"code": 403, "status": "PERMISSION_DENIED", "message": "no access"}}
    )
    fake.routes.insert(
        0, ("GET", re.compile(r"^/v2/.*/functions/skyhop-requests$"), lambda r, m: denied)
    )
    with pytest.raises(AccessError, match=r"^Cloud Functions: skyhop-requests: access denied"):
        d.deploy(build_source("gcp"))
    assert fake.calls("POST") == []


def test_topics_are_created_once(fake, staging, pubsub_server):
    cfg = config(staging, requests_topic="req-t1", events_topic="evt-t1", results_topic="res-t1")
    d = GCPDeployer(cfg, credentials=AnonymousCredentials(), api_endpoint=fake.endpoint)
    first = d.deploy(build_source("gcp"))
    assert [n for n in first.notes if n.startswith("created topic")] == [
        "created topic req-t1",
        "created topic evt-t1",
        "created topic res-t1",
    ]
    second = d.deploy(build_source("gcp"))
    assert not [n for n in second.notes if n.startswith("created topic")]


# ---------------------------------------------------------------- the command


def test_cli_deploys_and_deletes(fake, staging, tmp_path, monkeypatch, capsys):
    from skyhop import cli
    from skyhop.deploy import cli as deploy_cli

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - name: r1\n    source_bucket: src-a\n    destination: gs://bkt-b/\n"
    )
    made = []

    def factory(config):
        made.append(config)
        return deployer(fake, config)

    monkeypatch.setattr(deploy_cli, "gcp_deployer", factory)
    args = ["deploy", "gcp", "--project", PROJECT, "--region", "us-east1"]
    args += ["--staging-bucket", staging, "--rules", str(rules)]
    args += ["--compute-option", "machine_type=n2-standard-4", "--json"]
    assert cli.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert [f["action"] for f in report["functions"]] == ["created"] * 5
    assert made[0].compute_options == {"machine_type": "n2-standard-4"}
    assert made[0].replicated_buckets() == ["src-a"]
    assert made[0].manifest_uri == f"firestore://{PROJECT}/(default)/skyhop-manifest"
    # the deploy wrote the control-plane profile `skyhop cp --on gcp` uses
    from skyhop import remotes

    profile = remotes.find_control_plane("gcp")[1]
    assert profile.requests_queue == f"pubsub://{PROJECT}/skyhop-requests"
    assert profile.events_queue == f"pubsub://{PROJECT}/skyhop-events"
    assert profile.manifest == f"firestore://{PROJECT}/(default)/skyhop-manifest"
    assert profile.region == "us-east1" and profile.cloud == "gcp"
    assert cli.main([*args[:-1], "--delete"]) == 0
    out = capsys.readouterr().out
    assert "skyhop-requests" in out and "deleted" in out and fake.functions == {}
    assert remotes.control_planes() == {}  # the profile went with the functions


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--manifest", "firestore://p"], "expected firestore://PROJECT/DATABASE/COLLECTION"),
        (["--manifest", "mongo://x"], "use firestore://, aztable://, dynamodb:// or sqlite://"),
        (["--manifest", "dynamodb://t", "--rules", "/nonexistent/r.yaml"], "cannot read rules"),
        (["--manifest", "dynamodb://t", "--compute-option", "novalue"], "expected KEY=VALUE"),
        (["--manifest", "dynamodb://t", "--prefix", "Bad_Prefix"], "--prefix: String should match"),
    ],
)
def test_cli_bad_input_is_one_line_and_sends_nothing(fake, extra, message):
    from tests.fixtures.cli import run_cli

    result = run_cli("deploy", "gcp", "--project", PROJECT, "--staging-bucket", "bkt-1", *extra)
    assert result.code == 2, result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert fake.requests == []


def test_cli_bad_rules_file_names_the_field(tmp_path):
    from tests.fixtures.cli import run_cli

    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [{"name": "r1", "destination": "gs://bkt-b/"}]}))
    result = run_cli(
        "deploy",
        "gcp",
        "--project",
        PROJECT,
        "--staging-bucket",
        "bkt-1",
        "--manifest",
        "dynamodb://t",
        "--rules",
        str(rules),
    )
    assert result.code == 2
    assert result.stderr.strip() == (
        f"skyhop: error: rules {rules}: rules.0: give exactly one of source_bucket or bucket_tag"
    )
