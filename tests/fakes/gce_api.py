"""A local fake of exactly the Compute Engine REST endpoints GCEComputeProvider calls.

There is no emulator for the Compute API, so this serves, on 127.0.0.1, the
``compute/v1`` paths for regions, networks, subnetworks (get, insert,
aggregated list), firewalls (insert, get, list, patch, delete) and instances (insert,
get, delete, aggregated list with ``labels.KEY = "VALUE"`` / ``labels.KEY:*``
filters), answering with finished operations. Instances come up PROVISIONING,
then RUNNING with an external address from TEST-NET-3 (never contacted).
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from tests.fakes.http import FakeHTTP, Reply, Request

P = r"/compute/v1/projects/(?P<project>[^/]+)"


def _error(code: int, message: str, reason: str) -> Reply:
    return Reply(
        code,
        {
            "error": {
                "code": code,
                "message": message,
                "errors": [{"reason": reason, "message": message}],
            }
        },
    )


class FakeGCE(FakeHTTP):
    def __init__(self, zones: dict[str, list[str]] | None = None) -> None:
        super().__init__()
        self.zones = zones or {
            "us-east1": ["us-east1-b", "us-east1-c"],
            "europe-west1": ["europe-west1-d", "europe-west1-b"],
        }
        self.networks: dict[str, dict[str, Any]] = {}
        self.subnets: dict[tuple[str, str], dict[str, Any]] = {}
        self.firewalls: dict[str, dict[str, Any]] = {}
        self.instances: dict[tuple[str, str], dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._ips = itertools.count(10)
        r = self.route
        r("GET", P + r"/regions/(?P<region>[^/]+)", self.get_region)
        r("GET", P + r"/global/networks/(?P<name>[^/]+)", self.get_network)
        r("POST", P + r"/global/networks", self.insert_network)
        r("GET", P + r"/regions/(?P<region>[^/]+)/subnetworks/(?P<name>[^/]+)", self.get_subnet)
        r("POST", P + r"/regions/(?P<region>[^/]+)/subnetworks", self.insert_subnet)
        r("GET", P + r"/aggregated/subnetworks", self.list_subnets)
        r("POST", P + r"/global/firewalls", self.insert_firewall)
        r("GET", P + r"/global/firewalls", self.list_firewalls)
        r("GET", P + r"/global/firewalls/(?P<name>[^/]+)", self.get_firewall)
        r("PATCH", P + r"/global/firewalls/(?P<name>[^/]+)", self.patch_firewall)
        r("DELETE", P + r"/global/firewalls/(?P<name>[^/]+)", self.delete_firewall)
        r("POST", P + r"/zones/(?P<zone>[^/]+)/instances", self.insert_instance)
        r("GET", P + r"/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)", self.get_instance)
        r("DELETE", P + r"/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)", self.delete_instance)
        r("GET", P + r"/aggregated/instances", self.list_instances)
        r("GET", P + r"/(?P<scope>.+)/operations/(?P<name>[^/]+)", self.get_operation)

    # ------------------------------------------------------------ helpers

    def _op(self, m: re.Match[str], target: str, kind: str, **scope: str) -> Reply:
        n = next(self._ids)
        body = {
            "kind": "compute#operation",
            "id": str(n),
            "name": f"operation-{n}",
            "operationType": kind,
            "status": "DONE",
            "progress": 100,
            "targetLink": target,
            "selfLink": f"{m.group('project')}/operations/operation-{n}",
        }
        body.update(scope)
        return Reply(200, body)

    def get_operation(self, req: Request, m: re.Match[str]) -> Reply:
        return Reply(200, {"name": m.group("name"), "status": "DONE", "kind": "compute#operation"})

    # ------------------------------------------------------------ regions and networks

    def get_region(self, req: Request, m: re.Match[str]) -> Reply:
        region = m.group("region")
        if region not in self.zones:
            return _error(404, f"The resource 'regions/{region}' was not found", "notFound")
        base = f"https://www.googleapis.com/compute/v1/projects/{m.group('project')}/zones/"
        return Reply(200, {"name": region, "zones": [base + z for z in self.zones[region]]})

    def get_network(self, req: Request, m: re.Match[str]) -> Reply:
        net = self.networks.get(m.group("name"))
        if net is None:
            return _error(
                404, f"The resource 'networks/{m.group('name')}' was not found", "notFound"
            )
        return Reply(200, net)

    def insert_network(self, req: Request, m: re.Match[str]) -> Reply:
        name = req.body["name"]
        if name in self.networks:
            return _error(409, f"The resource 'networks/{name}' already exists", "alreadyExists")
        self.networks[name] = dict(
            req.body, selfLink=f"projects/{m.group('project')}/global/networks/{name}"
        )
        return self._op(m, name, "insert")

    def get_subnet(self, req: Request, m: re.Match[str]) -> Reply:
        subnet = self.subnets.get((m.group("region"), m.group("name")))
        if subnet is None:
            return _error(404, "subnetwork not found", "notFound")
        return Reply(200, subnet)

    def insert_subnet(self, req: Request, m: re.Match[str]) -> Reply:
        key = (m.group("region"), req.body["name"])
        if key in self.subnets:
            return _error(409, "subnetwork already exists", "alreadyExists")
        self.subnets[key] = dict(req.body)
        return self._op(m, req.body["name"], "insert", region=m.group("region"))

    def list_subnets(self, req: Request, m: re.Match[str]) -> Reply:
        items: dict[str, Any] = {}
        for (region, _), subnet in sorted(self.subnets.items()):
            items.setdefault(f"regions/{region}", {"subnetworks": []})["subnetworks"].append(subnet)
        return Reply(200, {"items": items})

    # ------------------------------------------------------------ firewalls

    def insert_firewall(self, req: Request, m: re.Match[str]) -> Reply:
        name = req.body["name"]
        if name in self.firewalls:
            return _error(409, f"The resource 'firewalls/{name}' already exists", "alreadyExists")
        self.firewalls[name] = dict(req.body)
        return self._op(m, name, "insert")

    def list_firewalls(self, req: Request, m: re.Match[str]) -> Reply:
        return Reply(200, {"items": [self.firewalls[n] for n in sorted(self.firewalls)]})

    def get_firewall(self, req: Request, m: re.Match[str]) -> Reply:
        rule = self.firewalls.get(m.group("name"))
        return Reply(200, rule) if rule else _error(404, "firewall not found", "notFound")

    def patch_firewall(self, req: Request, m: re.Match[str]) -> Reply:
        name = m.group("name")
        if name not in self.firewalls:
            return _error(404, "firewall not found", "notFound")
        self.firewalls[name].update(req.body)
        return self._op(m, name, "patch")

    def delete_firewall(self, req: Request, m: re.Match[str]) -> Reply:
        if self.firewalls.pop(m.group("name"), None) is None:
            return _error(404, "firewall not found", "notFound")
        return self._op(m, m.group("name"), "delete")

    # ------------------------------------------------------------ instances

    def insert_instance(self, req: Request, m: re.Match[str]) -> Reply:
        zone, name = m.group("zone"), req.body["name"]
        if (zone, name) in self.instances:
            return _error(409, f"The resource 'instances/{name}' already exists", "alreadyExists")
        inst = dict(req.body, id=str(next(self._ids)), zone=zone, status="PROVISIONING")
        inst["_ip"] = f"203.0.113.{next(self._ips)}"
        self.instances[(zone, name)] = inst
        return self._op(m, name, "insert", zone=zone)

    def _public(self, inst: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in inst.items() if not k.startswith("_")}
        if inst["status"] == "RUNNING":
            nics = [dict(n) for n in out.get("networkInterfaces", [])]
            if nics and nics[0].get("accessConfigs"):
                nics[0]["accessConfigs"] = [dict(nics[0]["accessConfigs"][0], natIP=inst["_ip"])]
            out["networkInterfaces"] = nics
        return out

    def get_instance(self, req: Request, m: re.Match[str]) -> Reply:
        inst = self.instances.get((m.group("zone"), m.group("name")))
        if inst is None:
            return _error(404, "instance not found", "notFound")
        reply = Reply(200, self._public(inst))
        if inst["status"] == "PROVISIONING":
            inst["status"] = "RUNNING"  # the next look finds it running
        return reply

    def delete_instance(self, req: Request, m: re.Match[str]) -> Reply:
        if self.instances.pop((m.group("zone"), m.group("name")), None) is None:
            return _error(404, "instance not found", "notFound")
        return self._op(m, m.group("name"), "delete", zone=m.group("zone"))

    def list_instances(self, req: Request, m: re.Match[str]) -> Reply:
        flt = (req.query.get("filter") or [""])[0]
        eq = re.fullmatch(r'labels\.([\w-]+) = "([^"]*)"', flt)
        has = re.fullmatch(r"labels\.([\w-]+):\*", flt)
        items: dict[str, Any] = {}
        for (zone, _), inst in sorted(self.instances.items()):
            labels = inst.get("labels", {})
            if eq and labels.get(eq.group(1)) != eq.group(2):
                continue
            if has and has.group(1) not in labels:
                continue
            items.setdefault(f"zones/{zone}", {"instances": []})["instances"].append(
                self._public(inst)
            )
        return Reply(200, {"items": items})
