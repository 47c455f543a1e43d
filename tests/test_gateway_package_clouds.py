"""Issue 19 item 12 on Azure and GCE: their gateways install this control plane's own
wheel, by its SHA-256, from a copy the launch (or the deployment) uploaded.

As on EC2 (tests/test_gateway_package.py): the wheel is built from the running
code, uploaded once under its digest (a second publish writes nothing), and a
launch hands its VMs a URL of that one object plus the digest. Here the uploads
go to the emulators (Azurite, the GCS emulator), the launches to the local fakes
of Resource Manager and the Compute API, and the boot script each VM was given
really runs (bash, curl from the emulator, sha256sum; ``python3 -m venv`` and
``pip`` stand-ins record what would be installed): it installs only if the bytes
it fetched hash to the digest it carries.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken
from azure.storage.blob import BlobServiceClient
from google.auth.credentials import AnonymousCredentials

from skyhop.compute.package import build_wheel, sha256_of, version
from skyhop.errors import UsageError
from skyhop.models import GatewayConfig, GatewayRole
from tests.fixtures.vm_boot import SHIMS

SUB = "00000000-0000-0000-0000-0000000000c1"


@pytest.fixture(scope="module")
def wheel_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return build_wheel(tmp_path_factory.mktemp("wheel")).read_bytes()


def config(job: str, gw: str, region: str, role: GatewayRole) -> GatewayConfig:
    return GatewayConfig(
        job_id=job, gateway_id=gw, role=role, region=region, ca_cert_pem="CA",
        cert_pem="CERT", key_pem="KEY", control_token="token",
    )  # fmt: skip


def boot(
    script: str, root: Path, replace: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a VM's boot script here: /etc/skyhop and /opt/skyhop relocated under
    ``root``, the OS commands stand-ins (tests/fixtures/vm_boot.py; pip records its
    arguments in ``root/pip.log``, systemd-run the unit it would start in
    ``root/unit.log``), curl and sha256sum the real ones."""
    shims = root / "shims"
    shims.mkdir(parents=True)
    stand_ins = dict(SHIMS)
    stand_ins["systemd-run"] = '#!/bin/bash\necho "$@" > "$VM_ROOT/unit.log"\n'
    stand_ins["systemctl"] = "#!/bin/bash\nexit 0\n"
    for name, text in stand_ins.items():
        (shims / name).write_text(text)
        (shims / name).chmod(0o755)
    text = script.replace("/etc/skyhop", f"{root}/etc/skyhop").replace(
        "/opt/skyhop", f"{root}/opt/skyhop"
    )
    for old, new in (replace or {}).items():
        text = text.replace(old, new)
    (root / "boot.sh").write_text(text)
    env = {
        "PATH": f"{shims}:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(root),
        "VM_ROOT": str(root),
        "REAL_PYTHON": sys.executable,
    }
    return subprocess.run(
        ["bash", str(root / "boot.sh")], env=env, capture_output=True, text=True, timeout=120
    )


def assert_installed_by_hash(
    done: subprocess.CompletedProcess[str], root: Path, digest: str
) -> None:
    assert done.returncode == 0, done.stderr
    log = (root / "pip.log").read_text().splitlines()
    assert log[0].startswith("pip install -q --no-deps --require-hashes -r "), log
    assert not any("skyhop[" in line or " skyhop==" in line for line in log), log  # no index
    dist = root / "opt" / "skyhop" / "dist"
    [wheel] = dist.glob("skyhop-*.whl")
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == digest
    assert f"--hash=sha256:{digest}" in (dist / "requirements.txt").read_text()
    assert (root / "unit.log").exists()  # and the gateway was started


def assert_refused(done: subprocess.CompletedProcess[str], root: Path) -> None:
    assert done.returncode != 0
    assert "does not match its SHA-256" in done.stderr
    assert not (root / "pip.log").exists() and not (root / "unit.log").exists()


# ---------------------------------------------------------------- Azure


class FakeCredential:
    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken("fake-token", int(time.time()) + 3600)


@pytest.fixture
def arm(tmp_path: Path):
    from tests.fakes.azure_arm import FakeARM

    server = FakeARM()
    server.start_tls(tmp_path / "tls")
    yield server
    server.close()


def _azure_provider(arm, **kwargs):
    from skyhop.compute.azure_vm import AzureComputeProvider

    return AzureComputeProvider(
        SUB, credential=FakeCredential(), base_url=arm.endpoint,
        client_kwargs={"connection_verify": arm.ca_bundle}, poll_interval=0.01,
        ready_timeout=10, ready_probe=lambda spec, cfg: True, **kwargs,
    )  # fmt: skip


def _custom_data(arm, gateway_id: str) -> str:
    vm = arm.of_type("virtualMachines")[f"skyhop-gw-{gateway_id}"]
    return base64.b64decode(vm["properties"]["osProfile"]["customData"]).decode()


def test_the_azure_wheel_is_uploaded_once_and_its_sas_url_reads_that_blob_only(
    azurite_server, wheel_bytes: bytes
) -> None:
    from skyhop.compute.azure_wheel import publish_wheel, signed

    container = "gw-" + uuid.uuid4().hex[:12]
    first = publish_wheel(azurite_server.account, container)
    digest = hashlib.sha256(wheel_bytes).hexdigest()
    assert first.sha256 == digest  # the wheel of the code running here
    assert first.blob == f"wheels/{digest}/skyhop-{version()}-py3-none-any.whl"
    service = BlobServiceClient.from_connection_string(azurite_server.connection_string)
    holder = service.get_container_client(container)
    [blob] = list(holder.list_blobs())
    assert blob.name == first.blob
    assert holder.get_container_properties().public_access is None  # private
    assert publish_wheel(azurite_server.account, container) == first  # the same code again:
    [again] = list(holder.list_blobs())
    assert (again.etag, again.last_modified) == (blob.etag, blob.last_modified)  # not rewritten

    package = signed(first)
    assert package.sha256 == digest and package.filename == blob.name.rsplit("/", 1)[1]
    assert "sp=r&" in package.url and "se=" in package.url  # read only, and it expires
    with urllib.request.urlopen(package.url, timeout=30) as answer:
        fetched = answer.read()
    assert hashlib.sha256(fetched).hexdigest() == digest and fetched == wheel_bytes
    # the URL is for reading that one blob: no write, no other blob
    put = urllib.request.Request(
        package.url, data=b"evil", method="PUT", headers={"x-ms-blob-type": "BlockBlob"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(put, timeout=30)
    assert refused.value.code == 403
    holder.upload_blob("wheels/other.whl", b"other")
    other = package.url.replace(first.blob, "wheels/other.whl")
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(other, timeout=30)
    assert denied.value.code == 403
    assert holder.get_blob_client(first.blob).download_blob().readall() == wheel_bytes


def test_an_azure_gateway_installs_the_published_wheel_only_if_its_hash_matches(
    azurite_server, arm, tmp_path: Path, wheel_bytes: bytes
) -> None:
    """The default launch: the provider publishes this machine's wheel to the account
    of AZURE_STORAGE_CONNECTION_STRING and each VM's custom data carries a SAS URL of
    it and its digest, no public-index requirement; the custom data, run, installs it
    by hash, and a swapped blob is refused."""
    from skyhop.compute.azure_wheel import CONTAINER

    assert os.environ["AZURE_STORAGE_CONNECTION_STRING"] == azurite_server.connection_string
    provider = _azure_provider(arm)
    provider.launch([config("j-wh", "gw-wh-0", "azure:eastus", GatewayRole.SOURCE)])
    script = _custom_data(arm, "gw-wh-0")
    digest = hashlib.sha256(wheel_bytes).hexdigest()
    assert provider.wheel is not None and provider.wheel.sha256 == digest
    assert f"{azurite_server.blob_endpoint}/{CONTAINER}/wheels/{digest}/" in script
    assert digest in script
    assert "skyhop[azure]==" not in script and "pip install -q skyhop" not in script
    assert_installed_by_hash(boot(script, tmp_path / "vm1"), tmp_path / "vm1", digest)

    # someone swapped the blob the VMs fetch: the next VM installs nothing
    blob = BlobServiceClient.from_connection_string(
        azurite_server.connection_string
    ).get_blob_client(CONTAINER, provider.wheel.blob)
    tampered = bytearray(wheel_bytes)
    tampered[100] ^= 1
    blob.upload_blob(bytes(tampered), overwrite=True)
    try:
        assert_refused(boot(script, tmp_path / "vm2"), tmp_path / "vm2")
    finally:
        blob.upload_blob(wheel_bytes, overwrite=True)


def test_a_deployments_azure_wheel_is_signed_for_each_launch_without_uploading(
    azurite_server, arm, tmp_path: Path
) -> None:
    from skyhop.compute.azure_wheel import publish_wheel

    container = "gw-" + uuid.uuid4().hex[:12]
    wheel = publish_wheel(azurite_server.account, container)
    provider = _azure_provider(arm, wheel=wheel.model_dump())  # as SKYHOP_COMPUTE_OPTIONS has it
    provider.launch([config("j-wd", "gw-wd-0", "azure:eastus", GatewayRole.DESTINATION)])
    script = _custom_data(arm, "gw-wd-0")
    assert f"/{container}/{wheel.blob}?" in script
    assert_installed_by_hash(boot(script, tmp_path / "vm"), tmp_path / "vm", wheel.sha256)


def test_an_azure_launch_with_nowhere_to_put_the_wheel_refuses_before_anything_starts(
    arm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    provider = _azure_provider(arm)
    with pytest.raises(UsageError, match="no storage account for the gateways' skyhop wheel"):
        provider.launch([config("j-wn", "gw-wn-0", "azure:eastus", GatewayRole.SOURCE)])
    assert arm.of_type("virtualMachines") == {}
    # a version from the public index only when asked for, by name
    pinned = _azure_provider(arm, package_spec=f"skyhop[azure]=={version()}")
    pinned.launch([config("j-wp", "gw-wp-0", "azure:eastus", GatewayRole.SOURCE)])
    assert f"pip install -q 'skyhop[azure]=={version()}'" in _custom_data(arm, "gw-wp-0")
    with pytest.raises(UsageError, match="not pinned"):
        _azure_provider(arm, package_spec="skyhop[azure]")


def test_the_wheel_built_here_is_the_one_published(tmp_path: Path, wheel_bytes: bytes) -> None:
    assert sha256_of(build_wheel(tmp_path)) == hashlib.sha256(wheel_bytes).hexdigest()


# ---------------------------------------------------------------- GCE


@pytest.fixture
def signer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A service-account key of this test's own as the Application Default Credentials."""
    from tests.fixtures.gce_boot import service_account_key

    key, email = service_account_key(tmp_path / "signer.json")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    return key, email


@pytest.fixture
def gce():
    from tests.fakes.gce_api import FakeGCE

    server = FakeGCE()
    server.endpoint = server.start()
    yield server
    server.close()


def _gce_provider(gce, **kwargs):
    from skyhop.compute.gce import GCEComputeProvider

    return GCEComputeProvider(
        "skyhop-test", credentials="anonymous", api_endpoint=gce.endpoint, poll_interval=0.01,
        ready_timeout=10, ready_probe=lambda spec, cfg: True, **kwargs,
    )  # fmt: skip


def _metadata(gce) -> dict[str, str]:
    [instance] = gce.instances.values()
    return {i["key"]: i["value"] for i in instance["metadata"]["items"]}


class _Serve:
    """A local HTTP server answering GETs with ``handle(path, headers) -> (code, body)``."""

    def __init__(self, handle) -> None:
        import http.server
        import threading

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.seen.append((self.path, dict(self.headers)))
                code, body = handle(self.path, self.headers)
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.seen: list[tuple[str, dict[str, str]]] = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _metadata_server(attributes: dict[str, str]) -> _Serve:
    """The GCE metadata server, for one VM: its attributes and its account's token."""
    import json

    from tests.fixtures.gce_boot import token_answer

    def handle(path: str, headers) -> tuple[int, bytes]:
        if headers.get("Metadata-Flavor") != "Google":
            return 403, b""
        base = "/computeMetadata/v1/instance/"
        path = path.split("?", 1)[0]
        if path.startswith(base + "attributes/") and path[len(base) + 11 :] in attributes:
            return 200, attributes[path[len(base) + 11 :]].encode()
        if path == base + "service-accounts/default/token":
            return 200, json.dumps(token_answer("vm")).encode()
        return 404, b""

    return _Serve(handle)


def _boot_gce(gce, root: Path, replace: dict[str, str] | None = None):
    items = _metadata(gce)
    metadata = _metadata_server(items)
    try:
        done = boot(
            items["startup-script"],
            root,
            {"http://metadata.google.internal": metadata.url, **(replace or {})},
        )
    finally:
        metadata.close()
    return done, metadata.seen


def _verify_v4(url: str, public_pem: bytes) -> None:
    """The URL's V4 signature, checked with the signing key's public half."""
    from urllib.parse import parse_qs, urlsplit

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    split = urlsplit(url)
    query, _, signature = split.query.rpartition("&X-Goog-Signature=")
    fields = {k: v[0] for k, v in parse_qs(query).items()}
    canonical = "\n".join(
        ["GET", split.path, query, f"host:{split.netloc}\n", "host", "UNSIGNED-PAYLOAD"]
    )
    scope = fields["X-Goog-Credential"].split("/", 1)[1]
    to_sign = "\n".join(
        [
            "GOOG4-RSA-SHA256",
            fields["X-Goog-Date"],
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = serialization.load_pem_public_key(public_pem)
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(bytes.fromhex(signature), to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())


def _public_pem(key_file: Path) -> bytes:
    import json

    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key(
        json.loads(key_file.read_text())["private_key"].encode(), None
    )
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_the_gce_wheel_is_uploaded_once_and_its_signed_url_reads_exactly_it(
    gcs_server, signer, wheel_bytes: bytes
) -> None:
    from skyhop.compute import gce_wheel

    gcs = gce_wheel.client("skyhop-test")
    bucket = "gw-" + uuid.uuid4().hex[:12]
    first = gce_wheel.publish_wheel(gcs, bucket, location="us-east1")
    digest = hashlib.sha256(wheel_bytes).hexdigest()
    assert first.sha256 == digest
    assert first.name == f"wheels/{digest}/skyhop-{version()}-py3-none-any.whl"
    [blob] = list(gcs.list_blobs(bucket))
    assert blob.name == first.name and blob.download_as_bytes() == wheel_bytes
    assert gce_wheel.publish_wheel(gcs, bucket) == first  # the same code again:
    [again] = list(gcs.list_blobs(bucket))
    assert again.generation == blob.generation  # not rewritten

    key, email = signer
    package = gce_wheel.signed(first, gcs, signer=gce_wheel.signing_credentials(None))
    assert package.auth is None and package.sha256 == digest
    assert package.url.startswith(f"{gcs_server.endpoint}/{bucket}/{first.name}?")
    assert "X-Goog-Algorithm=GOOG4-RSA-SHA256" in package.url
    assert f"X-Goog-Credential={email.replace('@', '%40')}%2F" in package.url
    assert "X-Goog-Expires=21600" in package.url  # six hours, then it is useless
    _verify_v4(package.url, _public_pem(key))  # signed by that key, for GET of that object
    with urllib.request.urlopen(package.url, timeout=30) as answer:
        fetched = answer.read()
    assert hashlib.sha256(fetched).hexdigest() == digest and fetched == wheel_bytes


def test_a_gce_gateway_installs_the_published_wheel_only_if_its_hash_matches(
    gcs_server, signer, gce, tmp_path: Path, wheel_bytes: bytes
) -> None:
    """The default launch: the provider publishes this machine's wheel to its bucket and
    each instance's startup script carries a signed URL of it and its digest, no
    public-index requirement; the script, run, installs it by hash, and a swapped
    object is refused."""
    from skyhop.compute import gce_wheel

    bucket = "gw-" + uuid.uuid4().hex[:12]
    provider = _gce_provider(gce, wheel_bucket=bucket)
    provider.launch([config("j-gw", "gw-gw-0", "gcp:us-east1", GatewayRole.SOURCE)])
    script = _metadata(gce)["startup-script"]
    digest = hashlib.sha256(wheel_bytes).hexdigest()
    assert provider.wheel is not None and provider.wheel.sha256 == digest
    assert (
        f"{gcs_server.endpoint}/{bucket}/wheels/{digest}/" in script
        and "X-Goog-Signature" in script
    )
    assert "skyhop[gcp]==" not in script and "pip install -q skyhop" not in script
    done, _ = _boot_gce(gce, tmp_path / "vm1")
    assert_installed_by_hash(done, tmp_path / "vm1", digest)
    assert (tmp_path / "vm1" / "etc/skyhop/gateway.json").exists()  # from the metadata server

    blob = gce_wheel.client("skyhop-test").bucket(bucket).blob(provider.wheel.name)
    tampered = bytearray(wheel_bytes)
    tampered[100] ^= 1
    blob.upload_from_string(bytes(tampered))
    done, _ = _boot_gce(gce, tmp_path / "vm2")
    assert_refused(done, tmp_path / "vm2")


def test_without_a_signer_gce_gateways_fetch_the_wheel_with_their_own_token(
    gcs_server, gce, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wheel_bytes: bytes
) -> None:
    """Credentials that cannot sign (a user's login; here none): a deployment's wheel,
    which its gateways' service accounts may read, is fetched with the VM's own token
    from the metadata server, sent to Storage as a bearer token, never on a command
    line; without service accounts the launch refuses before anything starts."""
    from skyhop.compute import gce_wheel

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "none.json"))
    bucket = "gw-" + uuid.uuid4().hex[:12]
    wheel = gce_wheel.publish_wheel(gce_wheel.client("skyhop-test"), bucket)
    with pytest.raises(UsageError, match="cannot sign a URL of it"):
        _gce_provider(gce, wheel=wheel.model_dump()).launch(
            [config("j-gn", "gw-gn-0", "gcp:us-east1", GatewayRole.SOURCE)]
        )
    assert gce.instances == {}
    accounts = {r: f"gw-{r}@skyhop-test.iam.gserviceaccount.com" for r in ("source", "relay")}
    accounts["destination"] = "gw-destination@skyhop-test.iam.gserviceaccount.com"
    provider = _gce_provider(gce, wheel=wheel.model_dump(), service_accounts=accounts)
    provider.launch([config("j-gt", "gw-gt-0", "gcp:us-east1", GatewayRole.SOURCE)])
    script = _metadata(gce)["startup-script"]
    assert "X-Goog-Signature" not in script and "service-accounts/default/token" in script

    # Storage as the VM reaches it: only with the VM's token (the emulator checks none)
    token = "ya29.vm-vm"

    def storage(path: str, headers) -> tuple[int, bytes]:
        if headers.get("Authorization") != f"Bearer {token}":
            return 401, b""
        with urllib.request.urlopen(gcs_server.endpoint + path, timeout=30) as answer:
            return 200, answer.read()

    checked = _Serve(storage)
    try:
        done, asked = _boot_gce(gce, tmp_path / "vm", {gcs_server.endpoint: checked.url})
    finally:
        checked.close()
    assert_installed_by_hash(done, tmp_path / "vm", wheel.sha256)
    assert [p for p, _ in asked if p.endswith("/token")]  # it asked the metadata server
    [(path, headers)] = checked.seen
    assert path == f"/download/storage/v1/b/{bucket}/o/{wheel.name.replace('/', '%2F')}?alt=media"
    assert token not in (tmp_path / "vm" / "boot.sh").read_text()


class _BucketIAM:
    """A local fake of the one Storage surface the emulator lacks: a bucket's IAM
    policy (GET and PUT ``/storage/v1/b/BUCKET/iam``), with its etag."""

    def __init__(self) -> None:
        from tests.fakes.http import FakeHTTP, Reply

        self.policy: dict = {
            "bindings": [
                {"role": "roles/storage.legacyBucketOwner", "members": ["projectOwner:p"]}
            ],
            "etag": "CAE=",
            "version": 1,
        }
        self.http = FakeHTTP()
        path = r"/storage/v1/b/(?P<bucket>[^/]+)/iam"
        self.http.route("GET", path, lambda req, m: Reply(200, self.policy))
        self.http.route("PUT", path, self._put)
        self.endpoint = self.http.start()

    def _put(self, req, m):
        from tests.fakes.http import Reply

        if req.body.get("etag") != self.policy["etag"]:
            return Reply(412, {"error": {"code": 412, "message": "etag mismatch"}})
        self.policy = {**req.body, "etag": "CAI="}
        return Reply(200, self.policy)


def test_token_fetching_gateways_are_granted_read_on_the_wheel_bucket_once() -> None:
    """What the emulator cannot show (it has no bucket IAM): the service accounts that
    fetch the wheel with their own token get roles/storage.objectViewer on its bucket,
    added to the policy there (read, then written back with its etag), once."""
    from google.cloud import storage

    from skyhop.compute import gce_wheel

    iam = _BucketIAM()
    try:
        gcs = storage.Client(
            project="p", credentials=AnonymousCredentials(),
            client_options={"api_endpoint": iam.endpoint},
        )  # fmt: skip
        readers = ["gw-source@p.iam.gserviceaccount.com", "gw-relay@p.iam.gserviceaccount.com"]
        added = gce_wheel.grant_readers(gcs, "skyhop-gateways-p", readers)
        assert added == sorted(f"serviceAccount:{r}" for r in readers)
        roles = {b["role"]: sorted(b["members"]) for b in iam.policy["bindings"]}
        assert roles == {
            "roles/storage.legacyBucketOwner": ["projectOwner:p"],  # kept
            "roles/storage.objectViewer": sorted(f"serviceAccount:{r}" for r in readers),
        }
        puts = len(iam.http.calls("PUT"))
        assert gce_wheel.grant_readers(gcs, "skyhop-gateways-p", readers[:1]) == []
        assert len(iam.http.calls("PUT")) == puts  # nothing to add: nothing written
    finally:
        iam.http.close()
