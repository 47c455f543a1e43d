"""GCEComputeProvider against a local fake of the Compute Engine REST API.

No emulator exists for the Compute API, so these tests run the real
google-cloud-compute client (anonymous credentials, ``api_endpoint`` pointed at
tests/fakes/gce_api.py on 127.0.0.1) and assert the requests it sends: network
and subnets, firewall source ranges, priorities and target tags, instance
labels, tags and metadata, and the life cycle (created, then deleted; another
job's rules and instances survive). Gateway readiness is probed by a stub: the
fake's instance addresses are never contacted.
"""

from __future__ import annotations

import ipaddress
import json

import pytest
from google.auth.credentials import AnonymousCredentials

from skyhop.compute.base import ComputeProvider, open_provider
from skyhop.compute.gce import GCEComputeProvider
from skyhop.compute.package import GatewayPackage
from skyhop.errors import GatewayError, UsageError
from skyhop.models import GatewayConfig, GatewayRole
from tests.fakes.gce_api import FakeGCE
from tests.fakes.http import Reply
from tests.suites.compute_suite import ComputeSuite

#: what these VMs install (tests/test_gateway_package_clouds.py publishes a real wheel)
PACKAGE = GatewayPackage(
    url="https://example.test/skyhop-0.1.0-py3-none-any.whl",
    sha256="a" * 64,
    filename="skyhop-0.1.0-py3-none-any.whl",
)


@pytest.fixture
def fake():
    server = FakeGCE()
    server.endpoint = server.start()
    yield server
    server.close()


def make(fake, **kwargs):
    probes = []

    def probe(spec, cfg):
        probes.append((spec.gateway_id, spec.host, cfg.control_port))
        return True

    options = dict(
        credentials=AnonymousCredentials(),
        api_endpoint=fake.endpoint,
        poll_interval=0.01,
        ready_timeout=5,
        ready_probe=probe,
        package_spec=PACKAGE,
    )
    options.update(kwargs)
    provider = open_provider("gcp", project="proj-1", **options)
    provider.probes = probes
    return provider


def config(job: str, gw: str, region: str, role: GatewayRole) -> GatewayConfig:
    return GatewayConfig(
        job_id=job,
        gateway_id=gw,
        role=role,
        region=region,
        ca_cert_pem="CA",
        cert_pem="CERT",
        key_pem="KEY",
        control_token="token",
        parent_pid=12345,
    )


class TestGCESuite(ComputeSuite):
    """The ComputeProvider suite against the fake Compute Engine API."""

    @pytest.fixture
    def regions(self):
        return ("gcp:us-east1", "gcp:europe-west1")

    @pytest.fixture
    def make(self, fake):
        return lambda **kw: make(fake, **kw)

    @pytest.fixture
    def admitted(self, fake):
        def read(job_id):
            rule = fake.firewalls.get(f"skyhop-{job_id}", {})
            return set(rule.get("sourceRanges", []))

        return read

    @pytest.fixture
    def reaches(self, fake):
        def read(spec):
            zone, name = spec.instance_id.split("/")
            tags = set(fake.instances[(zone, name)]["tags"]["items"])
            return {
                source
                for rule in fake.firewalls.values()
                if tags & set(rule.get("targetTags", []))
                and any(str(spec.data_port) in a.get("ports", []) for a in rule["allowed"])
                for source in rule.get("sourceRanges", [])
            }

        return read

    @pytest.fixture
    def leftovers(self, fake):
        return lambda job_id: [
            name
            for name, inst in fake.instances.items()
            if inst.get("labels", {}).get("skyhop-job") == job_id
        ]

    @pytest.fixture
    def failed_launch(self, fake):
        provider = make(
            fake,
            ready_timeout=0.05,
            ready_probe=lambda spec, cfg: False,
            control_cidrs=["198.51.100.0/24"],  # its control rule, made at launch, goes too
        )
        configs = [config("j-x", "gw-x", "us-east1", GatewayRole.SOURCE)]
        return provider, configs, "not ready within"


def test_provider_is_gces(fake):
    provider = make(fake)
    assert isinstance(provider, GCEComputeProvider)
    assert isinstance(provider, ComputeProvider)
    assert provider.name == "gcp"


def test_ensure_network_creates_vpc_and_one_subnet_per_region_once(fake):
    provider = make(fake)
    provider.ensure_network("gcp:us-east1")
    provider.ensure_network("us-east1")
    assert list(fake.networks) == ["skyhop"]
    net = fake.networks["skyhop"]
    assert net["autoCreateSubnetworks"] is False
    assert net["routingConfig"]["routingMode"] == "GLOBAL"
    assert len(fake.calls("POST", "/global/networks")) == 1
    # a fresh provider (another function invocation) finds it and creates nothing
    again = make(fake)
    again.ensure_network("us-east1")
    again.ensure_network("europe-west1")
    assert len(fake.calls("POST", "/global/networks")) == 1
    assert sorted(fake.subnets) == [
        ("europe-west1", "skyhop-europe-west1"),
        ("us-east1", "skyhop-us-east1"),
    ]
    ranges = [ipaddress.ip_network(s["ipCidrRange"]) for s in fake.subnets.values()]
    assert not ranges[0].overlaps(ranges[1])
    for (region, _), subnet in fake.subnets.items():
        assert subnet["network"] == "projects/proj-1/global/networks/skyhop"
        assert subnet["region"] == region


def test_job_life_cycle_rules_and_instances(fake):
    provider = make(fake, control_cidrs=["198.51.100.0/24"])
    job1 = [
        config("j-one", "gw-j-one-h0-0", "gcp:us-east1", GatewayRole.SOURCE),
        config("j-one", "gw-j-one-h1-0", "gcp:europe-west1", GatewayRole.DESTINATION),
    ]
    specs = provider.launch(job1)
    assert [s.gateway_id for s in specs] == ["gw-j-one-h0-0", "gw-j-one-h1-0"]
    assert all(
        ipaddress.ip_address(s.host) in ipaddress.ip_network("203.0.113.0/24") for s in specs
    )
    assert [(s.data_port, s.control_port) for s in specs] == [(7400, 7401)] * 2
    assert [s.region for s in specs] == ["gcp:us-east1", "gcp:europe-west1"]
    assert sorted(p[0] for p in provider.probes) == ["gw-j-one-h0-0", "gw-j-one-h1-0"]

    # instances: zone, labels, tags, boot script and the VM's configuration
    inst = fake.instances[("us-east1-b", "skyhop-gw-gw-j-one-h0-0")]
    assert inst["labels"] == {
        "skyhop-job": "j-one",
        "skyhop-gateway": "gw-j-one-h0-0",
        "skyhop-role": "source",
    }
    assert inst["tags"]["items"] == ["skyhop", "skyhop-j-one"]
    assert inst["machineType"] == "zones/us-east1-b/machineTypes/n2-standard-8"
    meta = {i["key"]: i["value"] for i in inst["metadata"]["items"]}
    assert "python -m gateway_vm --config" in meta["startup-script"]
    assert "skyhop-gateway-config" in meta["startup-script"]
    vm_cfg = GatewayConfig.model_validate_json(meta["skyhop-gateway-config"])
    assert vm_cfg.listen_host == "0.0.0.0"
    assert vm_cfg.parent_pid is None
    assert (vm_cfg.data_port, vm_cfg.control_port) == (7400, 7401)
    nic = inst["networkInterfaces"][0]
    assert nic["subnetwork"] == "projects/proj-1/regions/us-east1/subnetworks/skyhop-us-east1"
    assert nic["accessConfigs"][0]["type"] == "ONE_TO_ONE_NAT"
    assert ("europe-west1-b", "skyhop-gw-gw-j-one-h1-0") in fake.instances

    # the control rule was made at launch, from the control plane's range only
    ctl = fake.firewalls["skyhop-j-one-ctl"]
    assert ctl["sourceRanges"] == ["198.51.100.0/24"]
    assert ctl["allowed"] == [{"IPProtocol": "tcp", "ports": ["7401"]}]
    assert ctl["targetTags"] == ["skyhop-j-one"]

    provider.authorize("j-one", specs)
    rule = fake.firewalls["skyhop-j-one"]
    assert rule["priority"] == 1000
    assert rule["direction"] == "INGRESS"
    assert rule["network"] == "projects/proj-1/global/networks/skyhop"
    assert rule["sourceRanges"] == sorted(f"{s.host}/32" for s in specs)
    assert rule["allowed"] == [{"IPProtocol": "tcp", "ports": ["7400"]}]
    assert rule["targetTags"] == ["skyhop-j-one"]
    provider.authorize("j-one", specs[:1])  # again: updated in place, not duplicated
    assert fake.firewalls["skyhop-j-one"]["sourceRanges"] == [f"{specs[0].host}/32"]
    assert len(fake.calls("PATCH", "/global/firewalls/skyhop-j-one")) == 1

    # a second job
    other = make(fake).launch([config("j-two", "gw-j-two-h0-0", "us-east1-c", GatewayRole.RELAY)])
    make(fake).authorize("j-two", other)
    assert fake.firewalls["skyhop-j-two"]["sourceRanges"] == [f"{other[0].host}/32"]

    listed = make(fake).list_gateways("j-one")
    assert [(g.gateway_id, g.role, g.host, g.region) for g in listed] == [
        (s.gateway_id, s.role, s.host, s.region) for s in specs
    ]
    assert len(make(fake).list_gateways()) == 3

    # tear down job one: its rules and instances go, job two's stay
    fresh = make(fake)
    fresh.revoke("j-one")
    fresh.terminate("j-one")
    assert sorted(fake.firewalls) == ["skyhop-j-two"]
    assert list(fake.instances) == [("us-east1-c", "skyhop-gw-gw-j-two-h0-0")]
    assert fresh.list_gateways("j-one") == []
    fresh.revoke("j-one")  # idempotent
    fresh.terminate("j-one")
    assert [g.gateway_id for g in fresh.list_gateways()] == ["gw-j-two-h0-0"]


def test_bad_input_is_one_line_usage_error(fake, monkeypatch):
    provider = make(fake)
    with pytest.raises(UsageError, match="not a GCP region"):
        provider.ensure_network("aws:us-east-1")
    with pytest.raises(UsageError, match="unknown GCP region 'mars-north1'"):
        provider.ensure_network("gcp:mars-north1")
    with pytest.raises(UsageError, match="not a CIDR"):
        make(fake, control_cidrs=["10.0.0.0/33"])
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.delenv("GCLOUD_PROJECT", raising=False)
    with pytest.raises(UsageError, match="no Google Cloud project"):
        GCEComputeProvider(credentials=AnonymousCredentials())
    assert not fake.calls("POST")


def test_startup_script_fetches_config_from_metadata(fake):
    provider = make(fake, package_spec="skyhop[gcp]==0.1.0")
    body = provider._instance(
        provider_cfg := config("j-s", "gw-s", "us-east1", GatewayRole.SOURCE),
        "us-east1",
        "us-east1-b",
        provider.package("us-east1"),
    )
    script = {i.key: i.value for i in body.metadata.items}["startup-script"]
    assert "Metadata-Flavor: Google" in script
    assert "'skyhop[gcp]==0.1.0'" in script
    assert (
        json.loads({i.key: i.value for i in body.metadata.items}["skyhop-gateway-config"])[
            "gateway_id"
        ]
        == provider_cfg.gateway_id
    )


def test_a_rule_that_cannot_be_deleted_does_not_keep_the_other(fake):
    """Issue 19 item 10: one error stopped the rest of the revoke loop."""
    provider = make(fake, control_cidrs=["198.51.100.0/24"])
    specs = provider.launch([config("j-r", "gw-r", "us-east1", GatewayRole.SOURCE)])
    provider.authorize("j-r", specs)
    assert sorted(fake.firewalls) == ["skyhop-j-r", "skyhop-j-r-ctl"]
    assert [r["job"] for r in provider.rules("j-r")] == ["j-r", "j-r"]
    refused = {"error": {"code": 400, "message": "refused", "errors": [{"reason": "bad"}]}}
    fake.fail("DELETE", "/global/firewalls/skyhop-j-r", Reply(400, refused))
    with pytest.raises(GatewayError, match="refused"):
        make(fake).revoke("j-r")
    assert sorted(fake.firewalls) == ["skyhop-j-r"]  # the control rule went all the same
    make(fake).revoke("j-r")
    assert fake.firewalls == {}


def test_each_gateway_role_runs_as_its_own_service_account(fake):
    """Issue 19 item 9: one identity for every gateway. Each role's VMs run as their
    role's service account; a provider told to share one refuses before anything."""
    accounts = {
        "source": "gw-source@proj-1.iam.gserviceaccount.com",
        "relay": "gw-relay@proj-1.iam.gserviceaccount.com",
        "destination": "gw-dst@proj-1.iam.gserviceaccount.com",
    }
    provider = make(fake, service_accounts=accounts)
    specs = provider.launch(
        [
            config("j-sa", f"gw-sa-{role}", "us-east1", GatewayRole(role))
            for role in ("source", "relay", "destination")
        ]
    )
    for spec in specs:
        zone, name = spec.instance_id.split("/")
        [account] = fake.instances[(zone, name)]["serviceAccounts"]
        assert account["email"] == accounts[spec.role.value]
    with pytest.raises(UsageError, match="share the identity"):
        make(fake, service_accounts={**accounts, "relay": accounts["destination"]})
