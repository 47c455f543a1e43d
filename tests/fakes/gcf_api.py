"""A local fake of exactly the Cloud Functions v2 REST endpoints ``skyhop deploy gcp`` calls.

There is no emulator for the Cloud Functions API, so this serves, on 127.0.0.1,
``GET`` / ``POST`` (``functionId``) / ``PATCH`` (``updateMask``) / ``DELETE`` of
``/v2/projects/P/locations/L/functions[/F]`` and ``GET`` of operations. Every
operation finishes at once (``done: true``) with the function, now ``ACTIVE``
and with a ``url``, as its response; a create of an existing function is 409,
an update or delete of a missing one 404, as the API answers.
"""

from __future__ import annotations

import copy
import itertools
import re
from typing import Any

from tests.fakes.http import FakeHTTP, Reply, Request

LOC = r"/v2/(?P<parent>projects/[^/]+/locations/[^/]+)"
FUNCTION_TYPE = "type.googleapis.com/google.cloud.functions.v2.Function"
METADATA_TYPE = "type.googleapis.com/google.cloud.functions.v2.OperationMetadata"


def _error(code: int, status: str, message: str) -> Reply:
    return Reply(code, {"error": {"code": code, "status": status, "message": message}})


class FakeCloudFunctions(FakeHTTP):
    def __init__(self) -> None:
        super().__init__()
        self.functions: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        r = self.route
        r("GET", LOC + r"/functions/(?P<fid>[^/]+)", self.get)
        r("POST", LOC + r"/functions", self.create)
        r("PATCH", LOC + r"/functions/(?P<fid>[^/]+)", self.update)
        r("DELETE", LOC + r"/functions/(?P<fid>[^/]+)", self.delete)
        r("GET", LOC + r"/operations/(?P<op>[^/]+)", self.get_operation)

    def _op(self, parent: str, function: dict[str, Any] | None) -> Reply:
        name = f"{parent}/operations/operation-{next(self._ids)}"
        op: dict[str, Any] = {
            "name": name,
            "done": True,
            "metadata": {"@type": METADATA_TYPE, "target": (function or {}).get("name", "")},
        }
        if function is not None:
            op["response"] = {"@type": FUNCTION_TYPE, **copy.deepcopy(function)}
        else:
            op["response"] = {"@type": "type.googleapis.com/google.protobuf.Empty"}
        self.operations[name] = op
        return Reply(200, op)

    def _activate(self, fn: dict[str, Any], fid: str) -> None:
        fn["state"] = "ACTIVE"
        fn["url"] = f"https://{fid}-abc123-uc.a.run.app"
        fn.setdefault("environment", "GEN_2")

    def get(self, req: Request, m: re.Match[str]) -> Reply:
        name = f"{m.group('parent')}/functions/{m.group('fid')}"
        if name not in self.functions:
            return _error(404, "NOT_FOUND", f"Resource '{name}' was not found")
        return Reply(200, self.functions[name])

    def create(self, req: Request, m: re.Match[str]) -> Reply:
        fid = (req.query.get("functionId") or [""])[0]
        if not re.fullmatch(r"[a-z][a-z0-9\-]{0,62}", fid):
            return _error(400, "INVALID_ARGUMENT", f"invalid function id {fid!r}")
        name = f"{m.group('parent')}/functions/{fid}"
        if name in self.functions:
            return _error(409, "ALREADY_EXISTS", f"Function {fid} already exists")
        fn = copy.deepcopy(req.body or {})
        fn["name"] = name
        self._activate(fn, fid)
        self.functions[name] = fn
        return self._op(m.group("parent"), fn)

    def update(self, req: Request, m: re.Match[str]) -> Reply:
        name = f"{m.group('parent')}/functions/{m.group('fid')}"
        if name not in self.functions:
            return _error(404, "NOT_FOUND", f"Resource '{name}' was not found")
        mask = (req.query.get("updateMask") or [""])[0]
        fn = self.functions[name]
        for path in filter(None, mask.split(",")):
            key = re.sub(r"_([a-z])", lambda g: g.group(1).upper(), path)
            if key in (req.body or {}):
                fn[key] = copy.deepcopy(req.body[key])
            else:
                fn.pop(key, None)
        self._activate(fn, m.group("fid"))
        return self._op(m.group("parent"), fn)

    def delete(self, req: Request, m: re.Match[str]) -> Reply:
        name = f"{m.group('parent')}/functions/{m.group('fid')}"
        if self.functions.pop(name, None) is None:
            return _error(404, "NOT_FOUND", f"Resource '{name}' was not found")
        return self._op(m.group("parent"), None)

    def get_operation(self, req: Request, m: re.Match[str]) -> Reply:
        name = f"{m.group('parent')}/operations/{m.group('op')}"
        if name not in self.operations:
            return _error(404, "NOT_FOUND", f"operation {name} not found")
        return Reply(200, self.operations[name])
