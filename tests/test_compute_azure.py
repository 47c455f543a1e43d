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
from skyhop.errors import GatewayError, UsageError
from skyhop.models import GatewayConfig, GatewayRole
from tests.fakes.azure_arm import FakeARM

SUB = "00000000-0000-0000-0000-000000000001"


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


def test_provider_satisfies_the_protocol(fake):
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


def test_launch_that_never_gets_ready_cleans_up(fake):
    provider = make(fake, ready_timeout=0.05, ready_probe=lambda spec, cfg: False)
    with pytest.raises(GatewayError, match="not ready within"):
        provider.launch([config("j-x", "gw-x", "eastus", GatewayRole.SOURCE)])
    assert fake.of_type("virtualMachines") == {}
    assert fake.of_type("networkInterfaces") == {}
    assert fake.of_type("publicIPAddresses") == {}


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
