"""The ComputeProvider conformance suite: launch, firewall rules, revoke,
terminate, and teardown after a failed launch, run against every cloud.

A subclass supplies four fixtures:

``make``
    ``make(**options)``: a fresh provider (a new function instance: it knows
    nothing the previous one learned but what the cloud tells it).
``regions``
    two regions of the cloud, in the planner's ``cloud:region`` spelling.
``admitted``
    ``admitted(job_id)``: the source prefixes the cloud's firewall admits on the
    data port for that job, read from the backend itself (not from the provider).
``failed_launch``
    ``(provider, configs, match)``: a launch that fails after creating at least one
    gateway, and the error it must raise.

``reaches``
    ``reaches(spec)``: the source prefixes the cloud's firewall admits to that one
    gateway on its data port, whichever job's rule admits them (read from the
    backend: every rule that applies to the gateway's instance).

and, optionally, ``leftovers(job_id)``: what the backend still holds of a job's
gateways (instances, NICs, addresses...) after a failed launch (empty means none),
and ``lose_gateways(provider, job_id)``: the job's gateways go, its rules stay
(what a teardown whose revoke failed leaves; default ``provider.terminate``).

Every provider here lists its rules by job (:class:`~skyhop.compute.base.FirewallRules`),
which is how the reaper finds the rules a failed revoke left.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from skyhop.compute.base import ComputeProvider, FirewallRules
from skyhop.controlplane.serverless import reap
from skyhop.controlplane.service import ControlPlane
from skyhop.errors import UsageError
from skyhop.models import GatewayConfig, GatewayRole, GatewaySpec, Job, JobState, TransferRequest
from skyhop.state.sqlite import SQLiteManifest


def gateway_config(job: str, gw: str, region: str, role: GatewayRole) -> GatewayConfig:
    """A gateway configuration any provider accepts (no key material)."""
    return GatewayConfig(
        job_id=job,
        gateway_id=gw,
        role=role,
        region=region,
        ca_cert_pem="-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n",
        cert_pem="-----BEGIN CERTIFICATE-----\ngw\n-----END CERTIFICATE-----\n",
        key_pem="-----BEGIN PRIVATE KEY-----\nk\n-----END PRIVATE KEY-----\n",
        control_token="t0k3n",
        parent_pid=4242,
    )


def _job(job: str, regions: tuple[str, str]) -> list[GatewayConfig]:
    a, b = regions
    return [
        gateway_config(job, f"gw-{job}-src", a, GatewayRole.SOURCE),
        gateway_config(job, f"gw-{job}-dst", b, GatewayRole.DESTINATION),
    ]


def _hosts(specs: list[GatewaySpec]) -> set[str]:
    return {f"{s.host}/32" for s in specs}


class ComputeSuite:
    """Subclass with the fixtures described in the module docstring."""

    @pytest.fixture
    def leftovers(self) -> Callable[[str], Any]:
        return lambda job_id: []

    @pytest.fixture
    def lose_gateways(self) -> Callable[[Any, str], None]:
        return lambda provider, job_id: provider.terminate(job_id)

    def test_provider_satisfies_the_protocol(self, make):
        provider = make()
        assert isinstance(provider, ComputeProvider)
        assert provider.name and isinstance(provider.ready_via_events, bool)

    def test_launch_returns_every_gateway_with_an_address(self, make, regions):
        configs = _job("j-suite-launch", regions)
        specs = make().launch(configs)
        assert [s.gateway_id for s in specs] == [c.gateway_id for c in configs]
        assert [(s.job_id, s.role, s.region) for s in specs] == [
            (c.job_id, c.role, c.region) for c in configs
        ]
        for spec in specs:
            assert spec.host and spec.data_port > 0 and spec.control_port > 0
        listed = make().list_gateways("j-suite-launch")  # a fresh instance finds them
        assert sorted(g.gateway_id for g in listed) == sorted(c.gateway_id for c in configs)

    def test_rules_admit_only_each_jobs_gateways(self, make, regions, admitted):
        provider = make()
        one = provider.launch(_job("j-suite-one", regions))
        two = provider.launch(_job("j-suite-two", regions))
        assert admitted("j-suite-one") == set()  # nothing is open before authorize
        provider.authorize("j-suite-one", one)
        provider.authorize("j-suite-two", two)
        provider.authorize("j-suite-one", one)  # again: nothing added, no failure
        assert admitted("j-suite-one") == _hosts(one)
        assert admitted("j-suite-two") == _hosts(two)

    def test_revoke_and_terminate_keep_the_other_job_and_are_idempotent(
        self, make, regions, admitted
    ):
        provider = make()
        one = provider.launch(_job("j-suite-a", regions))
        two = provider.launch(_job("j-suite-b", regions))
        provider.authorize("j-suite-a", one)
        provider.authorize("j-suite-b", two)
        fresh = make()  # teardown from another instance, from what the cloud says
        fresh.revoke("j-suite-a")
        fresh.terminate("j-suite-a")
        assert admitted("j-suite-a") == set()
        assert admitted("j-suite-b") == _hosts(two)
        assert fresh.list_gateways("j-suite-a") == []
        assert sorted(g.gateway_id for g in fresh.list_gateways("j-suite-b")) == sorted(
            s.gateway_id for s in two
        )
        fresh.revoke("j-suite-a")  # idempotent
        fresh.terminate("j-suite-a")
        fresh.revoke("j-suite-b")
        fresh.terminate("j-suite-b")
        assert admitted("j-suite-b") == set() and fresh.list_gateways("j-suite-b") == []

    def test_teardown_after_a_failed_launch(self, failed_launch, leftovers, admitted):
        provider, configs, match = failed_launch
        job_id = configs[0].job_id
        with pytest.raises(Exception, match=match):
            provider.launch(configs)
        assert provider.list_gateways(job_id) == []
        assert leftovers(job_id) == []
        assert admitted(job_id) == set()
        assert isinstance(provider, FirewallRules)
        assert provider.rules(job_id) == []  # control rules made at launch are gone too
        assert job_id not in provider.firewall_jobs()

    def test_a_gateway_admits_only_its_own_jobs_peers(self, make, regions, reaches):
        """Issue 19 item 10: with one security group per region for every job, one
        job's /32 rules admitted its peers to every job's gateways there."""
        provider = make()
        one = provider.launch(_job("j-suite-own", regions))
        two = provider.launch(_job("j-suite-peer", regions))
        provider.authorize("j-suite-own", one)
        provider.authorize("j-suite-peer", two)
        for spec in one:
            assert reaches(spec) == _hosts(one), spec.gateway_id
        for spec in two:
            assert reaches(spec) == _hosts(two), spec.gateway_id

    @pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0", "10.0.0.0/8", "2001:db8::/32"])
    def test_control_ranges_wider_than_a_16_are_refused(self, make, cidr):
        with pytest.raises(UsageError, match="too wide") as info:
            make(control_cidrs=[cidr])
        assert "\n" not in str(info.value)

    def test_the_reaper_revokes_the_rules_a_failed_revoke_left(
        self, make, regions, admitted, lose_gateways, tmp_path
    ):
        """Issue 19 item 10: rules whose revoke failed were never reaped (the reaper
        found leftovers by their gateways only). Rules of finished and unknown jobs
        go; a job that is not finished keeps its own."""
        manifest = SQLiteManifest(tmp_path / "manifest.db")
        request = TransferRequest(source=f"{tmp_path}/s/", destination=f"{tmp_path}/d/")
        done = Job(request=request, state=JobState.SUCCEEDED)
        held = Job(request=request, state=JobState.PLANNED)
        manifest.create_job(done)
        manifest.create_job(held)
        provider = make()
        for job_id in (done.job_id, held.job_id, "j-suite-unknown"):
            specs = provider.launch(_job(job_id, regions))
            provider.authorize(job_id, specs)
            lose_gateways(provider, job_id)  # as if its revoke had failed
            assert admitted(job_id) == _hosts(specs)
        report = reap(ControlPlane(manifest=manifest, compute=make()), resume=False)
        assert report.rules_revoked == sorted([done.job_id, "j-suite-unknown"])
        assert admitted(done.job_id) == set() and admitted("j-suite-unknown") == set()
        assert admitted(held.job_id)  # not finished: left alone
        fresh = make()
        assert isinstance(fresh, FirewallRules)
        assert fresh.firewall_jobs() == {held.job_id}
        assert {r["job"] for r in fresh.rules()} == {held.job_id}
