"""AzureComputeProvider against a local fake of the Azure Resource Manager REST API.

No emulator exists for ARM, so these tests run the real azure-mgmt-compute,
azure-mgmt-network and azure-mgmt-resource clients (a fake token credential,
``base_url`` pointed at tests/fakes/azure_arm.py over TLS on 127.0.0.1) and
assert the requests they send: resource group, NSG and VNet per region, NSG
rule source and destination prefixes, ports and priorities, VM tags and custom
data, and the life cycle (created, then deleted; another job's rules and VMs
survive). Gateway readiness is probed by a stub: the fake's public addresses
are never contacted.
"""

from __future__ import annotations

import base64
import time

import pytest
from azure.core.credentials import AccessToken

from skyhop.compute.azure_vm import AzureComputeProvider
from skyhop.compute.base import ComputeProvider, open_provider
from skyhop.compute.package import GatewayPackage
from skyhop.errors import GatewayError, UsageError
from skyhop.models import GatewayConfig, GatewayRole
from tests.fakes.azure_arm import FakeARM
from tests.fakes.http import Reply
from tests.suites.compute_suite import ComputeSuite

SUB = "00000000-0000-0000-0000-000000000001"
#: what these VMs install (tests/test_gateway_package_clouds.py publishes a real wheel)
PACKAGE = GatewayPackage(
    url="https://example.test/skyhop-0.1.0-py3-none-any.whl",
    sha256="a" * 64,
    filename="skyhop-0.1.0-py3-none-any.whl",
)


class FakeCredential:
    def get_token(self, *scopes, **kwargs):
        return AccessToken("fake-token", int(time.time()) + 3600)


@pytest.fixture
def fake(tmp_path):
    server = FakeARM()
    server.start_tls(tmp_path / "tls")
    yield server
    server.close()


def make(fake, **kwargs):
    probes = []

    def probe(spec, cfg):
        probes.append(spec.gateway_id)
        return True

    options = dict(
        credential=FakeCredential(),
        base_url=fake.endpoint,
        client_kwargs={"connection_verify": fake.ca_bundle},
        poll_interval=0.01,
        ready_timeout=10,
        ready_probe=probe,
        package_spec=PACKAGE,
    )
    options.update(kwargs)
    provider = open_provider("azure", subscription_id=SUB, **options)
    provider.probes = probes
    return provider


def config(job, gw, region, role):
    return GatewayConfig(
        job_id=job,
        gateway_id=gw,
        role=role,
        region=region,
        ca_cert_pem="CA",
        cert_pem="CERT",
        key_pem="KEY",
        control_token="token",
        parent_pid=4242,
    )


class TestAzureSuite(ComputeSuite):
    """The ComputeProvider suite against the fake Resource Manager API."""

    @pytest.fixture
    def regions(self):
        return ("azure:eastus", "azure:westeurope")

    @pytest.fixture
    def make(self, fake):
        return lambda **kw: make(fake, **kw)

    @pytest.fixture
    def admitted(self, fake):
        def read(job_id):
            found = set()
            for nsg in ("skyhop-eastus-nsg", "skyhop-westeurope-nsg"):
                rule = fake.rules(nsg).get(f"skyhop-{job_id}", {})
                found |= set(rule.get("sourceAddressPrefixes", []))
            return found

        return read

    @pytest.fixture
    def reaches(self, fake):
        def read(spec):
            location = spec.region.removeprefix("azure:")
            nic = fake.of_type("networkInterfaces")[f"{spec.instance_id}-nic"]
            ip = nic["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"]
            return {
                source
                for rule in fake.rules(f"skyhop-{location}-nsg").values()
                if f"{ip}/32" in rule.get("destinationAddressPrefixes", [])
                and str(spec.data_port) in rule.get("destinationPortRanges", [])
                for source in rule.get("sourceAddressPrefixes", [])
            }

        return read

    @pytest.fixture
    def leftovers(self, fake):
        kinds = ("virtualMachines", "networkInterfaces", "publicIPAddresses")
        return lambda job_id: [name for kind in kinds for name in fake.of_type(kind)]

    @pytest.fixture
    def failed_launch(self, fake):
        provider = make(
            fake,
            ready_timeout=0.05,
            ready_probe=lambda spec, cfg: False,
            control_cidrs=["198.51.100.0/24"],  # its control rule, made at launch, goes too
        )
        configs = [config("j-x", "gw-x", "eastus", GatewayRole.SOURCE)]
        return provider, configs, "not ready within"


def test_provider_is_azures(fake):
    provider = make(fake)
    assert isinstance(provider, AzureComputeProvider) and isinstance(provider, ComputeProvider)
    assert provider.name == "azure"


def test_ensure_network_makes_group_nsg_and_vnet_once(fake):
    provider = make(fake)
    provider.ensure_network("azure:eastus")
    provider.ensure_network("eastus")
    make(fake).ensure_network("westeurope")
    groups = [r for k, r in fake.resources.items() if k.endswith("/resourcegroups/skyhop")]
    assert groups and groups[0]["location"] == "eastus"
    assert sorted(fake.of_type("networkSecurityGroups")) == [
        "skyhop-eastus-nsg",
        "skyhop-westeurope-nsg",
    ]
    vnets = fake.of_type("virtualNetworks")
    assert sorted(vnets) == ["skyhop-eastus-vnet", "skyhop-westeurope-vnet"]
    subnet = vnets["skyhop-eastus-vnet"]["properties"]["subnets"][0]
    assert subnet["name"] == "gateways"
    assert subnet["properties"]["networkSecurityGroup"]["id"].endswith(
        "/networkSecurityGroups/skyhop-eastus-nsg"
    )
    assert len(fake.calls("PUT", "virtualNetworks/skyhop-eastus-vnet")) == 1


def test_job_life_cycle_rules_and_vms(fake):
    provider = make(fake, control_cidrs=["198.51.100.0/24"])
    job1 = [
        config("j-one", "gw-j-one-h0-0", "azure:eastus", GatewayRole.SOURCE),
        config("j-one", "gw-j-one-h1-0", "azure:westeurope", GatewayRole.DESTINATION),
    ]
    specs = provider.launch(job1)
    assert [s.gateway_id for s in specs] == ["gw-j-one-h0-0", "gw-j-one-h1-0"]
    assert all(s.host.startswith("203.0.113.") for s in specs)
    assert [(s.data_port, s.control_port) for s in specs] == [(7400, 7401)] * 2
    assert sorted(provider.probes) == ["gw-j-one-h0-0", "gw-j-one-h1-0"]

    vms = fake.of_type("virtualMachines")
    vm = vms["skyhop-gw-gw-j-one-h0-0"]
    assert vm["location"] == "eastus"
    assert vm["tags"] == {
        "skyhop-job": "j-one",
        "skyhop-gateway": "gw-j-one-h0-0",
        "skyhop-role": "source",
        "skyhop-region": "azure:eastus",
        "skyhop-ports": "7400,7401",
    }
    os_profile = vm["properties"]["osProfile"]
    assert os_profile["linuxConfiguration"]["disablePasswordAuthentication"] is True
    script = base64.b64decode(os_profile["customData"]).decode()
    assert "python -m gateway_vm --config" in script
    cfg_json = script.split("<<'SKYHOP_CONFIG_EOF'\n", 1)[1].split("\nSKYHOP_CONFIG_EOF", 1)[0]
    vm_cfg = GatewayConfig.model_validate_json(cfg_json)
    assert (vm_cfg.listen_host, vm_cfg.parent_pid, vm_cfg.data_port) == ("0.0.0.0", None, 7400)
    nic_ref = vm["properties"]["networkProfile"]["networkInterfaces"][0]
    assert nic_ref["id"].endswith("/networkInterfaces/skyhop-gw-gw-j-one-h0-0-nic")

    # control rule at launch: control plane's range to the job's own VMs only
    east = fake.rules("skyhop-eastus-nsg")
    ctl = east["skyhop-j-one-ctl"]
    assert ctl["sourceAddressPrefixes"] == ["198.51.100.0/24"]
    assert ctl["destinationPortRanges"] == ["7401"]
    assert ctl["priority"] == 1000

    provider.authorize("j-one", specs)
    east = fake.rules("skyhop-eastus-nsg")
    west = fake.rules("skyhop-westeurope-nsg")
    rule = east["skyhop-j-one"]
    assert rule["sourceAddressPrefixes"] == sorted(f"{s.host}/32" for s in specs)
    assert rule["destinationPortRanges"] == ["7400"]
    assert rule["access"] == "Allow" and rule["direction"] == "Inbound"
    assert rule["protocol"] == "Tcp"
    assert rule["priority"] == 1001  # 1000 is the control rule's
    nic = fake.of_type("networkInterfaces")["skyhop-gw-gw-j-one-h0-0-nic"]
    private = nic["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"]
    assert rule["destinationAddressPrefixes"] == [f"{private}/32"]
    assert west["skyhop-j-one"]["sourceAddressPrefixes"] == rule["sourceAddressPrefixes"]
    provider.authorize("j-one", specs)  # again: same rule, same priority
    assert fake.rules("skyhop-eastus-nsg")["skyhop-j-one"]["priority"] == 1001

    # a second job in eastus takes the next free priority
    second = make(fake)
    other = second.launch([config("j-two", "gw-j-two-h0-0", "eastus", GatewayRole.RELAY)])
    second.authorize("j-two", other)
    assert fake.rules("skyhop-eastus-nsg")["skyhop-j-two"]["priority"] == 1002

    listed = make(fake).list_gateways("j-one")
    assert [(g.gateway_id, g.host, g.role, g.region) for g in listed] == [
        (s.gateway_id, s.host, s.role, s.region) for s in specs
    ]
    assert len(make(fake).list_gateways()) == 3

    fresh = make(fake)
    fresh.revoke("j-one")
    fresh.terminate("j-one")
    assert sorted(fake.rules("skyhop-eastus-nsg")) == ["skyhop-j-two"]
    assert fake.rules("skyhop-westeurope-nsg") == {}
    assert sorted(fake.of_type("virtualMachines")) == ["skyhop-gw-gw-j-two-h0-0"]
    assert sorted(fake.of_type("networkInterfaces")) == ["skyhop-gw-gw-j-two-h0-0-nic"]
    assert sorted(fake.of_type("publicIPAddresses")) == ["skyhop-gw-gw-j-two-h0-0-ip"]
    fresh.revoke("j-one")  # idempotent
    fresh.terminate("j-one")
    assert [g.gateway_id for g in fresh.list_gateways()] == ["gw-j-two-h0-0"]


def test_bad_input(fake, monkeypatch):
    provider = make(fake)
    with pytest.raises(UsageError, match="not an Azure region"):
        provider.ensure_network("gcp:us-east1")
    with pytest.raises(UsageError, match="not a CIDR"):
        make(fake, control_cidrs=["nope"])
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID", raising=False)
    with pytest.raises(UsageError, match="no Azure subscription"):
        AzureComputeProvider(credential=FakeCredential())
    assert not fake.calls("PUT")


def test_a_rule_that_cannot_be_deleted_does_not_keep_the_others(fake):
    """Issue 19 item 10: one error stopped the rest of the revoke loop."""
    provider = make(fake, control_cidrs=["198.51.100.0/24"])
    specs = provider.launch(
        [
            config("j-r", "gw-r-0", "azure:eastus", GatewayRole.SOURCE),
            config("j-r", "gw-r-1", "azure:westeurope", GatewayRole.DESTINATION),
        ]
    )
    provider.authorize("j-r", specs)
    before = {(r["nsg"], r["name"]) for r in provider.rules("j-r")}
    assert len(before) == 4  # data and control rules in two NSGs
    fake.fail(
        "DELETE",
        "/securityRules/skyhop-j-r",
        Reply(400, {"error": {"code": "BadRequest", "message": "refused"}}),
    )
    with pytest.raises(GatewayError, match="refused"):
        make(fake).revoke("j-r")
    assert len(provider.rules("j-r")) == 1  # only the refused one is left
    make(fake).revoke("j-r")
    assert provider.rules("j-r") == []


def test_each_gateway_role_runs_as_its_own_managed_identity(fake):
    """Issue 19 item 9: one identity for every gateway. Each role's VMs run as their
    role's user-assigned identity; a provider told to share one refuses."""
    base = f"/subscriptions/{SUB}/resourceGroups/skyhop/providers/Microsoft.ManagedIdentity"
    identities = {r: f"{base}/userAssignedIdentities/gw-{r}" for r in ("source", "relay")}
    identities["destination"] = f"{base}/userAssignedIdentities/gw-destination"
    provider = make(fake, identities=identities)
    provider.launch(
        [
            config("j-mi", f"gw-mi-{role}", "eastus", GatewayRole(role))
            for role in ("source", "relay", "destination")
        ]
    )
    vms = fake.of_type("virtualMachines")
    for role in ("source", "relay", "destination"):
        identity = vms[f"skyhop-gw-gw-mi-{role}"]["identity"]
        assert identity["type"] == "UserAssigned"
        assert list(identity["userAssignedIdentities"]) == [identities[role]]
    with pytest.raises(UsageError, match="share the identity"):
        make(fake, identities={**identities, "source": identities["destination"]})
