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
