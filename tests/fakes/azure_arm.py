"""A local fake of exactly the Azure Resource Manager REST surface AzureComputeProvider calls.

There is no emulator for ARM, so this serves, over TLS on 127.0.0.1 (the
SDK's bearer-token policy refuses plain HTTP), PUT / GET / DELETE of resource
groups and of ``Microsoft.Network`` (network security groups and their
security rules, virtual networks, public IP addresses, network interfaces) and
``Microsoft.Compute/virtualMachines`` resources, plus listing a collection.
Every write finishes at once (``provisioningState: Succeeded``), public IPs get
an address from TEST-NET-3 (never contacted), NICs a private 10.0.0.x address,
two inbound rules of one NSG may not share a priority (400
``SecurityRuleConflict``, as ARM answers), and a VM's ``instanceView`` shows its
power state (``_power`` on the resource, running unless a test says otherwise).
"""

from __future__ import annotations

import copy
import itertools
import re
from pathlib import Path
from typing import Any

from tests.fakes.http import FakeHTTP, Reply, Request

ARM = r"(?P<path>/subscriptions/[^/]+/resourcegroups/[^/]+(?P<rest>/providers/.+)?)"


def _error(status: int, code: str, message: str) -> Reply:
    return Reply(status, {"error": {"code": code, "message": message}})


class FakeARM(FakeHTTP):
    def __init__(self) -> None:
        super().__init__()
        self.resources: dict[str, dict[str, Any]] = {}  # lowercased path -> resource
        self._public = itertools.count(20)
        self._private = itertools.count(4)
        self.route("PUT", ARM, self.put, re.IGNORECASE)
        self.route("GET", ARM, self.get, re.IGNORECASE)
        self.route("DELETE", ARM, self.delete, re.IGNORECASE)

    def start_tls(self, directory: Path) -> str:
        self.endpoint = self.start(tls_dir=directory)
        self.ca_bundle = str(directory / "cert.pem")
        return self.endpoint

    # ------------------------------------------------------------ queries for tests

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        """Resources whose path has ``/KIND/NAME`` last, by name."""
        out = {}
        for key, res in self.resources.items():
            parts = key.split("/")
            if len(parts) >= 2 and parts[-2] == kind.lower():
                out[res["name"]] = res
        return dict(sorted(out.items()))

    def rules(self, nsg: str) -> dict[str, dict[str, Any]]:
        return {
            r["name"]: r["properties"]
            for key, r in self.resources.items()
            if f"/networksecuritygroups/{nsg.lower()}/securityrules/" in key
        }

    # ------------------------------------------------------------ handlers

    @staticmethod
    def _is_item(match: re.Match[str]) -> bool:
        rest = match.group("rest")
        if rest is None:
            return True  # the resource group itself
        return len(rest.strip("/").split("/")[1:]) % 2 == 1

    def _view(self, key: str) -> dict[str, Any]:
        res = copy.deepcopy(self.resources[key])
        if key.split("/")[-2] == "networksecuritygroups":
            res["properties"]["securityRules"] = [
                copy.deepcopy(r)
                for k, r in sorted(self.resources.items())
                if k.startswith(key + "/securityrules/")
            ]
        return res

    def put(self, req: Request, m: re.Match[str]) -> Reply:
        path = m.group("path")
        key = path.lower()
        body = copy.deepcopy(req.body or {})
        props = body.setdefault("properties", {})
        parts = key.split("/")
        kind = parts[-2] if m.group("rest") else "resourcegroups"
        if kind == "securityrules":
            nsg = key.rsplit("/securityrules/", 1)[0]
            if nsg not in self.resources:
                return _error(404, "ResourceNotFound", "network security group not found")
            for k, other in self.resources.items():
                if (
                    k.startswith(nsg + "/securityrules/")
                    and k != key
                    and other["properties"]["priority"] == props.get("priority")
                    and other["properties"]["direction"] == props.get("direction")
                ):
                    return _error(
                        400,
                        "SecurityRuleConflict",
                        f"Security rule {parts[-1]} conflicts with rule {other['name']}. "
                        "Rules cannot have the same Priority and Direction.",
                    )
        if kind == "publicipaddresses":
            old = self.resources.get(key)
            props["ipAddress"] = (
                old["properties"]["ipAddress"] if old else f"203.0.113.{next(self._public)}"
            )
        if kind == "networkinterfaces":
            for ipc in props.get("ipConfigurations", []):
                ipc.setdefault("properties", {})["privateIPAddress"] = (
                    f"10.0.0.{next(self._private)}"
                )
                ipc["id"] = f"{path}/ipConfigurations/{ipc.get('name', 'primary')}"
        props["provisioningState"] = "Succeeded"
        body.update(id=path, name=path.rsplit("/", 1)[-1])
        created = key not in self.resources
        self.resources[key] = body
        return Reply(201 if created else 200, self._view(key))

    def get(self, req: Request, m: re.Match[str]) -> Reply:
        key = m.group("path").lower()
        if key.endswith("/instanceview") and key.rsplit("/", 1)[0] in self.resources:
            vm = self.resources[key.rsplit("/", 1)[0]]
            power = vm.get("_power", "PowerState/running")
            return Reply(
                200, {"statuses": [{"code": "ProvisioningState/succeeded"}, {"code": power}]}
            )
        if self._is_item(m):
            if key not in self.resources:
                return _error(
                    404, "ResourceNotFound", f"The resource {m.group('path')} was not found."
                )
            return Reply(200, self._view(key))
        items = [
            self._view(k)
            for k in sorted(self.resources)
            if k.startswith(key + "/") and "/" not in k[len(key) + 1 :]
        ]
        return Reply(200, {"value": items})

    def delete(self, req: Request, m: re.Match[str]) -> Reply:
        key = m.group("path").lower()
        if key not in self.resources:
            return Reply(204)
        for k in [k for k in self.resources if k == key or k.startswith(key + "/")]:
            del self.resources[k]
        return Reply(200)
