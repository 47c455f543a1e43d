"""A local fake of exactly the Azure surfaces ``skyhop deploy azure`` calls that have no emulator.

Resource Manager (``Microsoft.Resources`` groups, ``Microsoft.Web`` server farms
and sites, ``Microsoft.EventGrid`` event subscriptions as generic resources) is
tests/fakes/azure_arm.py; this adds what a site answers (its host names) and the
app's Kudu endpoints (and ``Microsoft.Web`` answers a create with 200, as it does), ``POST /api/zipdeploy?isAsync=true`` (202 with a
``Location``) and ``GET /api/deployments/latest`` (in progress on the first
look, then complete with status 4, Kudu's "success"), all over TLS on 127.0.0.1.
Queues are Azurite, not faked.
"""

from __future__ import annotations

import re

from tests.fakes.azure_arm import FakeARM
from tests.fakes.http import Reply, Request


class FakeWeb(FakeARM):
    def __init__(self) -> None:
        super().__init__()
        self.deployments: list[bytes] = []
        self.status_reads = 0
        self.fail_next_deployment = False
        # Kudu first: FakeARM's routes only match /subscriptions/...
        self.routes.insert(0, ("POST", re.compile(r"^/api/zipdeploy$"), self.zipdeploy))
        self.routes.insert(0, ("GET", re.compile(r"^/api/deployments/latest$"), self.latest))

    def put(self, req: Request, m: re.Match[str]) -> Reply:
        reply = super().put(req, m)
        key = m.group("path").lower()
        if "/providers/microsoft.web/" in key and reply.status == 201:
            reply = Reply(200, reply.body)  # Microsoft.Web answers a create with 200, not 201
        if "/providers/microsoft.web/sites/" in key and key.count("/") == 8:
            name = key.rsplit("/", 1)[-1]
            props = self.resources[key]["properties"]
            props["defaultHostName"] = f"{name}.azurewebsites.net"
            props["enabledHostNames"] = [
                f"{name}.azurewebsites.net",
                f"{name}.scm.azurewebsites.net",
            ]
            reply = Reply(reply.status, self._view(key))
        return reply

    def zipdeploy(self, req: Request, m: re.Match[str]) -> Reply:
        auth = req.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[len("Bearer ") :].strip():
            return Reply(401, {"Message": "Authorization has been denied"})
        self.deployments.append(req.body if isinstance(req.body, bytes) else b"")
        self.status_reads = 0
        return Reply(202, None, {"Location": f"{self.endpoint}/api/deployments/latest"})

    def latest(self, req: Request, m: re.Match[str]) -> Reply:
        self.status_reads += 1
        n = len(self.deployments)
        if self.status_reads < 2:
            return Reply(202, {"id": f"d{n}", "status": 1, "complete": False})
        if self.fail_next_deployment:
            self.fail_next_deployment = False
            return Reply(
                200,
                {"id": f"d{n}", "status": 3, "complete": True, "status_text": "Oryx build failed"},
            )
        return Reply(200, {"id": f"d{n}", "status": 4, "complete": True, "status_text": ""})
