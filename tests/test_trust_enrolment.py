"""A gateway enrols (#19 item 9, secrets): its boot configuration, what a cloud VM
carries in its user data or metadata, holds no private key and no token; it makes
its own key at boot and gets its certificate and secrets from the control plane
over mutual TLS, once, with a one-time token. Real gateway processes on loopback;
tests/test_cli_cloud.py boots EC2 instances (moto) from their real user data."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from skyhop import crypto, enrolment
from skyhop.errors import GatewayError
from skyhop.gateway_api import GatewayClient
from skyhop.models import GatewayConfig, GatewayRole, GatewaySpec

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Booted:
    def __init__(self, tmp_path: Path) -> None:
        self.ca = crypto.JobCA.create("j-enrol")
        self.client = self.ca.issue_client_cert()
        self.master = crypto.new_control_token()
        gid = "gw-j-enrol-a1-h1-0"
        data_key = crypto.generate_job_key()
        issued = self.ca.issue_gateway_cert(gid)
        self.full = GatewayConfig(
            job_id="j-enrol",
            gateway_id=gid,
            role=GatewayRole.DESTINATION,
            ca_cert_pem=self.ca.cert_pem,
            cert_pem=issued.cert_pem,
            key_pem=issued.key_pem,
            control_token=crypto.gateway_token(self.master, gid),
            control_client_sha256=crypto.cert_fingerprint(self.client.cert_pem),
            destination_uri=str(tmp_path / "dst"),
            control_port=_free_port(),
            workers=1,
            idle_timeout_s=60,
            **crypto.role_key_fields("destination", data_key),
        )
        self.boot, self.token_sha256 = enrolment.boot_config(self.full)
        self.path = tmp_path / "boot.json"
        self.path.write_text(self.boot.model_dump_json())
        self.path.chmod(0o600)
        env = dict(os.environ, PYTHONPATH=f"{ROOT / 'shared'}:{ROOT}")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway_vm", "--config", str(self.path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.spec = GatewaySpec(
            gateway_id=gid,
            job_id="j-enrol",
            region="local",
            role=GatewayRole.DESTINATION,
            host="127.0.0.1",
            control_port=self.full.control_port,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.spec.control_port), 1).close()
                break
            except OSError:
                assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.1)

    def real_client(self) -> GatewayClient:
        return GatewayClient(
            "127.0.0.1",
            self.spec.control_port,
            self.spec.gateway_id,
            self.ca.cert_pem,
            self.full.control_token,
            self.client.cert_pem,
            self.client.key_pem,
        )


@pytest.fixture
def booted(tmp_path: Path) -> Iterator[Booted]:
    b = Booted(tmp_path)
    yield b
    b.proc.terminate()
    try:
        b.proc.wait(30)
    except subprocess.TimeoutExpired:
        b.proc.kill()


def test_the_boot_configuration_holds_no_secret(booted: Booted) -> None:
    text = booted.path.read_text()
    boot = json.loads(text)
    assert "PRIVATE KEY" not in text
    assert boot["key_pem"] == boot["cert_pem"] == boot["control_token"] == ""
    for field in ("data_key_b64", "event_key_b64", "store_access"):
        assert boot[field] is None, field
    assert booted.full.control_token not in text and booted.full.key_pem not in text
    assert boot["enrol_token"] and booted.token_sha256 not in text
    assert enrolment.token_hash(boot["enrol_token"]) == booted.token_sha256


def test_enrolment_delivers_the_secrets_once_over_mtls(booted: Booted) -> None:
    b = booted
    # the control plane refuses a gateway that does not show the token it keeps the hash of
    with pytest.raises(GatewayError, match="does not hold its enrolment token"):
        enrolment.enrol(b.spec, b.full, "0" * 64, b.ca, b.client, timeout=10)
    # another certificate of the job CA (a gateway's) cannot enrol it
    relay = b.ca.issue_gateway_cert("gw-j-enrol-a1-h0-0")
    with pytest.raises(GatewayError, match="403"):
        enrolment.enrol(b.spec, b.full, b.token_sha256, b.ca, relay, timeout=10)
    # nor can a client of another CA (refused at the handshake)
    stranger = crypto.JobCA.create("j-other").issue_client_cert()
    with pytest.raises(GatewayError):
        enrolment.enrol(b.spec, b.full, b.token_sha256, b.ca, stranger, timeout=3)
    assert b.proc.poll() is None
    with pytest.raises(GatewayError):  # not enrolled: no control API yet
        b.real_client().status()

    enrolment.enrol(b.spec, b.full, b.token_sha256, b.ca, b.client)
    deadline = time.monotonic() + 30
    while True:
        try:
            status = b.real_client().status()
            break
        except GatewayError:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert status.state == "ready" and status.role == GatewayRole.DESTINATION
    # its key never left it: the certificate it serves is the job CA's, for its own key
    assert b.full.key_pem not in b.path.read_text()

    # the token is spent: nothing answers an enrolment again
    with pytest.raises(GatewayError):
        enrolment.enrol(b.spec, b.full, b.token_sha256, b.ca, b.client, timeout=3)
    assert b.real_client().status().state == "ready"
