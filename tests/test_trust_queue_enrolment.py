"""Queue-controlled gateways enrol over their queues (#19 item 9): what the
serverless control plane launches a gateway with (EC2 user data in moto, the
configuration a launch is handed) holds no private key, token or MAC key, only a
one-time token whose hash the manifest keeps; the gateway posts a gateway_enrol
and gets its secrets sealed to a key it made, on its own control queue. A wrong
token, a replayed one and forged secrets get nothing and change nothing.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from functions import common
from gateway_vm.enrol import enrol_queued
from skyhop import crypto, enrolment
from skyhop.compute.ec2 import EC2ComputeProvider, config_from_user_data
from skyhop.compute.local import LocalComputeProvider
from skyhop.controlplane import provision
from skyhop.controlplane.service import ControlPlane
from skyhop.errors import ThrottledError
from skyhop.models import (
    EnrolledMessage,
    EnrolSecrets,
    EventEnvelope,
    GatewayConfig,
    GatewayEnrol,
    GatewayRole,
    GatewaySpec,
    Job,
    JobState,
    TransferOptions,
    TransferRequest,
)
from skyhop.queues.memory import MemoryControlQueues, MemoryQueue
from skyhop.state.sqlite import SQLiteManifest

EAST = "us-east-1"


class Recording(LocalComputeProvider):
    """A cloud whose launches are recorded (no process, no VM): what a gateway boots with."""

    ready_via_events = True

    def __init__(self) -> None:
        super().__init__()
        self.launched: list[GatewayConfig] = []

    def launch(self, configs: list[GatewayConfig]) -> list[GatewaySpec]:
        self.launched += configs
        return [
            GatewaySpec(gateway_id=c.gateway_id, job_id=c.job_id, region=c.region, role=c.role)
            for c in configs
        ]


def _secretless(text: str) -> None:
    assert "PRIVATE KEY" not in text
    for field in enrolment.SECRET_FIELDS:
        assert f'"{field}":""' in text or f'"{field}":null' in text or field not in text


def _started(tmp_path: Path, compute: Any, **options: Any) -> tuple[ControlPlane, Job]:
    manifest = SQLiteManifest(tmp_path / f"m-{uuid.uuid4().hex[:6]}.db")
    events = f"memory://events-{uuid.uuid4().hex[:8]}"
    cp = ControlPlane(
        manifest=manifest,
        compute=compute,
        event_sink=events,
        control_queues=MemoryControlQueues(f"memory://ctl-{uuid.uuid4().hex[:8]}"),
    )
    job = Job(
        request=TransferRequest(
            source=f"{tmp_path}/src/",
            destination=f"{tmp_path}/dst/",
            options=TransferOptions(**options),
        ),
        state=JobState.PLANNED,
    )
    manifest.create_job(job)
    return cp, cp.start(job.job_id)


def _pump(cp: ControlPlane, until: threading.Event) -> None:
    """The events queue delivered to the control plane until ``until``."""
    queue = MemoryQueue(cp.event_sink)
    while not until.is_set():
        for message in queue.receive(max_messages=10, wait_seconds=0.1):
            cp.handle_event(EventEnvelope.model_validate_json(message.body).event)
            queue.ack(message)


def _enrol(cp: ControlPlane, boot: GatewayConfig) -> GatewayConfig:
    """Run a gateway's queue enrolment against the control plane (its pump in a thread)."""
    done = threading.Event()
    pump = threading.Thread(target=_pump, args=(cp, done), daemon=True)
    pump.start()
    try:
        assert boot.control_queue
        return enrol_queued(
            boot,
            control=MemoryQueue(boot.control_queue),
            events=MemoryQueue(boot.event_sink),
            wait_seconds=0.1,
        )
    finally:
        done.set()
        pump.join(5)


def _attacker_enrol(boot: GatewayConfig, token: str) -> GatewayEnrol:
    """An enrolment with ``token`` and keys of the sender's own."""
    mine = crypto.self_signed(boot.gateway_id)
    return GatewayEnrol(
        job_id=boot.job_id,
        gateway_id=boot.gateway_id,
        token=token,
        tls_public_key_pem=crypto.public_key_pem(mine.cert_pem),
        seal_key_b64=base64.b64encode(crypto.job_public_key(crypto.generate_job_key())).decode(),
    )


def test_a_queue_controlled_gateway_boots_with_no_secret_and_enrols_over_its_queues(
    tmp_path: Path,
) -> None:
    compute = Recording()
    cp, job = _started(tmp_path, compute)
    assert job.state == JobState.PROVISIONING and job.runtime is not None
    boots = {c.gateway_id: c for c in compute.launched}
    assert {c.role for c in boots.values()} == {GatewayRole.SOURCE, GatewayRole.DESTINATION}
    for boot in boots.values():
        text = boot.model_dump_json()
        _secretless(text)
        assert boot.key_pem == boot.cert_pem == boot.control_token == ""
        assert boot.event_key_b64 is None and boot.data_key_b64 is None
        assert boot.enrol_token and boot.control_queue
        # the manifest keeps the token's hash, never the token
        spec = next(g for g in job.runtime.gateways if g.gateway_id == boot.gateway_id)
        assert spec.enrolment is not None
        assert spec.enrolment.token_sha256 == enrolment.token_hash(boot.enrol_token)
        assert boot.enrol_token not in job.runtime.model_dump_json()

    destination = next(c for c in boots.values() if c.role == GatewayRole.DESTINATION)
    full = _enrol(cp, destination)
    master = job.runtime.control_token
    assert full.control_token == crypto.gateway_token(master, full.gateway_id)
    assert base64.b64decode(full.event_key_b64 or "") == crypto.gateway_event_key(
        master, full.gateway_id
    )
    assert full.data_key_b64  # no key wrapper: the job's key, sealed to this gateway alone
    assert full.enrol_token is None and "PRIVATE KEY" in full.key_pem
    cert = x509.load_pem_x509_certificate(full.cert_pem.encode())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(full.ca_cert_pem.encode()))
    key = serialization.load_pem_private_key(full.key_pem.encode(), password=None)
    assert (
        crypto.public_key_pem(full.cert_pem)
        == key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )  # certified: the key the gateway made
    after = cp.require(job.job_id).runtime
    assert after is not None
    spent = next(g for g in after.gateways if g.gateway_id == destination.gateway_id)
    assert spent.enrolment is None  # token spent, the pending data key gone with it
    others = [g for g in after.gateways if g.gateway_id != destination.gateway_id]
    assert all(g.enrolment is not None for g in others)


def test_a_wrong_or_replayed_token_gets_nothing_and_changes_nothing(tmp_path: Path) -> None:
    compute = Recording()
    cp, job = _started(tmp_path, compute)
    boot = next(c for c in compute.launched if c.role == GatewayRole.DESTINATION)
    assert boot.control_queue and boot.enrol_token
    control = MemoryQueue(boot.control_queue)

    before = cp.require(job.job_id)
    for wrong in ("x" * 43, boot.enrol_token[:-2] + "AA"):
        cp.handle_event(_attacker_enrol(boot, wrong))
        assert control.receive(max_messages=10) == []
    # another gateway's token does not enrol this one
    other = next(c for c in compute.launched if c.gateway_id != boot.gateway_id)
    cp.handle_event(_attacker_enrol(boot, other.enrol_token or ""))
    assert control.receive(max_messages=10) == []
    assert cp.require(job.job_id) == before

    _enrol(cp, boot)  # the gateway enrols
    spent = cp.require(job.job_id)
    # the same token again, with the replayer's keys: nothing sent, nothing changed
    cp.handle_event(_attacker_enrol(boot, boot.enrol_token))
    assert control.receive(max_messages=10) == []
    assert cp.require(job.job_id) == spent


def test_secrets_not_from_the_job_ca_or_not_sealed_to_the_gateway_are_refused(
    tmp_path: Path,
) -> None:
    compute = Recording()
    cp, job = _started(tmp_path, compute)
    boot = next(c for c in compute.launched if c.role == GatewayRole.SOURCE)
    assert boot.control_queue and job.runtime is not None
    control = MemoryQueue(boot.control_queue)
    # whoever can write the gateway's queue seals its own secrets to the key the
    # gateway posted: a certificate from another CA, so the gateway refuses them
    events = MemoryQueue(boot.event_sink)
    result: dict[str, Any] = {}

    def gateway() -> None:
        try:
            result["cfg"] = enrol_queued(
                boot.model_copy(update={"idle_timeout_s": 3.0}),
                control=control,
                events=events,
                wait_seconds=0.1,
            )
        except Exception as exc:  # noqa: BLE001
            result["error"] = exc

    thread = threading.Thread(target=gateway, daemon=True)
    thread.start()
    [posted] = events.receive(max_messages=1, wait_seconds=5)
    events.ack(posted)
    request = EventEnvelope.model_validate_json(posted.body).event
    assert isinstance(request, GatewayEnrol) and request.mac is None
    forged_ca = crypto.JobCA.create(job.job_id)
    forged = forged_ca.issue_gateway_cert(
        boot.gateway_id, public_key_pem=request.tls_public_key_pem
    )
    seal_key = enrolment.seal_key_of(request)
    secrets = EnrolSecrets(gateway_id=boot.gateway_id, cert_pem=forged.cert_pem, control_token="x")
    eph, nonce, sealed = crypto.seal_to(
        seal_key,
        secrets.model_dump_json().encode(),
        enrolment.seal_context(boot.job_id, boot.gateway_id, seal_key),
    )
    control.send(
        EnrolledMessage(
            gateway_id=boot.gateway_id,
            ephemeral_key_b64=base64.b64encode(eph).decode(),
            nonce_b64=base64.b64encode(nonce).decode(),
            sealed_b64=base64.b64encode(sealed).decode(),
        ).model_dump_json()
    )
    # and the control plane's real answer, sealed to another gateway's key, does not open
    pending = next(g for g in job.runtime.gateways if g.gateway_id == boot.gateway_id)
    assert pending.enrolment is not None
    other = enrolment.seal_secrets(
        job.runtime, pending, pending.enrolment, _attacker_enrol(boot, "t" * 20)
    )
    control.send(other.model_dump_json())
    thread.join(10)
    assert "cfg" not in result and "not enrolled" in str(result.get("error"))


def test_ec2_user_data_of_a_serverless_launch_holds_no_secret(moto, tmp_path: Path) -> None:
    kms = boto3.client("kms", region_name=EAST).create_key(Description="t")["KeyMetadata"]["Arn"]
    from skyhop.crypto.kms import KMSKeyWrapper

    compute = EC2ComputeProvider(wait_ready=False)
    manifest = SQLiteManifest(tmp_path / "m.db")
    job = Job(
        request=TransferRequest(
            source=f"{tmp_path}/src/",
            destination=f"{tmp_path}/dst/",
            options=TransferOptions(src_region=EAST, dst_region=EAST),
        ),
        state=JobState.PLANNED,
    )
    manifest.create_job(job)
    queues = MemoryControlQueues(f"memory://ctl-{uuid.uuid4().hex[:8]}")
    try:
        started = provision.launch_queued(
            job,
            compute,
            manifest,
            "memory://events",
            queues,
            key_wrapper=KMSKeyWrapper(kms, job_id=job.job_id),
        )
        assert started.runtime is not None and len(started.runtime.gateways) == 2
        ec2 = boto3.client("ec2", region_name=EAST)
        for spec in started.runtime.gateways:
            assert spec.instance_id and spec.enrolment is not None
            raw = ec2.describe_instance_attribute(InstanceId=spec.instance_id, Attribute="userData")
            script = base64.b64decode(raw["UserData"]["Value"]).decode()
            assert "PRIVATE KEY" not in script
            assert started.runtime.control_token not in script
            boot = config_from_user_data(script)
            assert boot.key_pem == boot.cert_pem == boot.control_token == ""
            assert boot.event_key_b64 is None and boot.data_key_b64 is None
            assert boot.store_access is None
            assert boot.enrol_token and enrolment.token_matches(
                boot.enrol_token, spec.enrolment.token_sha256
            )
            event_key = base64.b64encode(
                crypto.gateway_event_key(started.runtime.control_token, spec.gateway_id)
            ).decode()
            assert event_key not in script
            if spec.role == GatewayRole.DESTINATION:  # ciphertext only KMS opens
                assert boot.wrapped_data_key and spec.enrolment.data_key_b64 is None
    finally:
        compute.revoke(job.job_id)
        compute.terminate(job.job_id)


@pytest.mark.parametrize("field", ["token", "seal_key_b64"])
def test_a_malformed_enrolment_is_refused_strictly(field: str) -> None:
    good = {
        "job_id": "j",
        "gateway_id": "g",
        "token": "t" * 20,
        "tls_public_key_pem": "pem",
        "seal_key_b64": "k",
    }
    with pytest.raises(ValueError):
        GatewayEnrol.model_validate({**good, field: 5})


def _launched_queued(tmp_path: Path, compute: Any, region: str) -> Job:
    manifest = SQLiteManifest(tmp_path / f"m-{uuid.uuid4().hex[:6]}.db")
    job = Job(
        request=TransferRequest(
            source=f"{tmp_path}/src/",
            destination=f"{tmp_path}/dst/",
            options=TransferOptions(src_region=region, dst_region=region),
        ),
        state=JobState.PLANNED,
    )
    manifest.create_job(job)
    queues = MemoryControlQueues(f"memory://ctl-{uuid.uuid4().hex[:8]}")
    started = provision.launch_queued(job, compute, manifest, "memory://events", queues)
    assert started.runtime is not None and len(started.runtime.gateways) == 2
    return started


def _boot_holds_no_secret(job: Job, boot: GatewayConfig, where: str) -> None:
    """What a VM's metadata (``where``: its whole text) holds of a serverless launch."""
    assert job.runtime is not None
    assert "PRIVATE KEY" not in where
    assert job.runtime.control_token not in where
    spec = next(g for g in job.runtime.gateways if g.gateway_id == boot.gateway_id)
    for secret in (
        crypto.gateway_token(job.runtime.control_token, spec.gateway_id),
        base64.b64encode(
            crypto.gateway_event_key(job.runtime.control_token, spec.gateway_id)
        ).decode(),
    ):
        assert secret not in where
    assert boot.key_pem == boot.cert_pem == boot.control_token == ""
    assert boot.event_key_b64 is None and boot.data_key_b64 is None and boot.store_access is None
    assert spec.enrolment is not None and boot.enrol_token
    assert enrolment.token_matches(boot.enrol_token, spec.enrolment.token_sha256)
    if spec.role == GatewayRole.DESTINATION:  # no key wrapping here: kept until it enrols
        assert spec.enrolment.data_key_b64 and spec.enrolment.data_key_b64 not in where


def test_gce_metadata_of_a_serverless_launch_holds_no_secret(tmp_path: Path) -> None:
    from tests.fakes.gce_api import FakeGCE
    from tests.test_compute_gce import make as make_gce

    fake = FakeGCE()
    fake.endpoint = fake.start()
    try:
        job = _launched_queued(tmp_path, make_gce(fake), "gcp:us-east1")
        assert len(fake.instances) == 2
        for inst in fake.instances.values():
            meta = {i["key"]: i["value"] for i in inst["metadata"]["items"]}
            boot = GatewayConfig.model_validate_json(meta["skyhop-gateway-config"])
            _boot_holds_no_secret(job, boot, json_text(inst))
    finally:
        fake.close()


def test_azure_custom_data_of_a_serverless_launch_holds_no_secret(tmp_path: Path) -> None:
    from tests.fakes.azure_arm import FakeARM
    from tests.test_compute_azure import make as make_azure

    fake = FakeARM()
    fake.start_tls(tmp_path / "tls")
    try:
        job = _launched_queued(tmp_path, make_azure(fake), "azure:eastus")
        vms = fake.of_type("virtualMachines")
        assert len(vms) == 2
        for vm in vms.values():
            script = base64.b64decode(vm["properties"]["osProfile"]["customData"]).decode()
            text = script.split("<<'SKYHOP_CONFIG_EOF'\n", 1)[1]
            boot = GatewayConfig.model_validate_json(text.split("\nSKYHOP_CONFIG_EOF", 1)[0])
            _boot_holds_no_secret(job, boot, script + json_text(vm))
    finally:
        fake.close()


def json_text(value: Any) -> str:
    return json.dumps(value)


def test_secrets_that_could_not_be_sent_leave_the_token_for_the_enrolment_delivered_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compute = Recording()
    cp, job = _started(tmp_path, compute)
    boot = next(c for c in compute.launched if c.role == GatewayRole.DESTINATION)
    assert boot.control_queue and boot.enrol_token
    request = _attacker_enrol(boot, boot.enrol_token)  # keys of its own: the gateway's here
    before = cp.require(job.job_id)

    def broken(self: MemoryQueue, body: str) -> None:
        raise ThrottledError("queue: slow down")

    with monkeypatch.context() as patch:
        patch.setattr(MemoryQueue, "send", broken)
        with pytest.raises(ThrottledError):
            common.on_gateway_event(cp, request)
    assert cp.require(job.job_id).runtime == before.runtime  # the token is still there
    control = MemoryQueue(boot.control_queue)
    assert control.receive(max_messages=10) == []
    # delivered again (what the functions' settle does with a raised event), through
    # the handler every cloud's gateway-events function calls: answered
    monkeypatch.setattr(common, "control_plane", lambda: cp)
    handled = common.handle_gateway_event(EventEnvelope(event=request).model_dump_json())
    assert handled.action != "dropped"
    [answer] = control.receive(max_messages=10)
    assert EnrolledMessage.model_validate_json(answer.body).gateway_id == boot.gateway_id
    after = cp.require(job.job_id).runtime
    assert after is not None
    assert next(g for g in after.gateways if g.gateway_id == boot.gateway_id).enrolment is None
