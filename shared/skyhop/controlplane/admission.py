"""What a deployed control plane accepts from its request queue.

A TransferRequest on a queue comes from whoever may send to that queue; the
functions that run it hold the deployment's credentials. So a request is
admitted only when

* its source and its destination each lie inside a configured location: a
  replication rule's source bucket (under the rule's prefix) or destination,
  or one of the deployment's transfer locations (``transferBuckets`` on AWS,
  ``SKYHOP_TRANSFER_LOCATIONS`` everywhere). A scheme nobody configured is
  refused: ``file:///etc/`` on a function host is never a source;
* its ``reply_to`` is the results queue or an allow-listed reply queue (a
  report, with object names and checksums, goes nowhere else);
* it asks for at most ``max_relays`` relays and ``max_gateways_per_region``
  gateways per region (the job's planned total is capped again at launch by
  :class:`~skyhop.controlplane.service.Limits`, per job and per account).

A transfer location may also be every bucket of one cloud (``s3://*``,
``gs://*``, ``az://ACCOUNT/*``): the deployer then leaves the bound to the cloud
identity of the functions. The local filesystem has no such form.

A ``bucket_tag`` rule names no bucket: it admits any cloud bucket as a source,
towards that rule's destination only; what such a source
may be is bounded by the cloud identity of the functions (see the README's
security section).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from skyhop.errors import UsageError
from skyhop.models import ReplicationConfig, TransferRequest
from skyhop.uri import StoreURI, parse_uri


class Location(BaseModel):
    """A store, and a key prefix inside it ('' is all of it)."""

    model_config = ConfigDict(frozen=True)

    store_id: str
    prefix: str = ""

    @classmethod
    def of(cls, uri: StoreURI) -> Location:
        key = uri.key
        if key and not key.endswith("/"):
            key += "/"  # a folder: 'data' admits 'data/x', not 'data2/x'
        return cls(store_id=uri.store_id, prefix=key)

    def holds(self, uri: StoreURI) -> bool:
        if ".." in uri.key.split("/"):
            return False
        if self.store_id.endswith("/*"):  # every bucket of one cloud (account)
            return uri.scheme != "local" and uri.store_id.startswith(self.store_id[:-1])
        if uri.store_id != self.store_id:
            return False
        return not self.prefix or uri.key.startswith(self.prefix) or uri.key + "/" == self.prefix


#: ``s3://*``, ``gs://*``, ``az://ACCOUNT/*``: every bucket of that cloud (account)
_ANY_BUCKET = re.compile(r"^(?:(s3|gs)://|az://([a-z0-9]{3,24})/)\*/?$")


class RuleSource(BaseModel):
    """A rule's source: a bucket (of whichever cloud the event names) under a prefix."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    prefix: str = ""

    def holds(self, uri: StoreURI) -> bool:
        if uri.scheme == "local" or uri.bucket != self.bucket or ".." in uri.key.split("/"):
            return False
        prefix = self.prefix if not self.prefix or self.prefix.endswith("/") else self.prefix + "/"
        return not prefix or uri.key.startswith(prefix) or uri.key + "/" == prefix


class Admission(BaseModel):
    """The admission rules of one deployment."""

    model_config = ConfigDict(frozen=True)

    locations: list[Location] = Field(default_factory=list)
    #: (rule source, destination location) pairs admitted together
    routes: list[tuple[RuleSource, Location]] = Field(default_factory=list)
    #: bucket_tag rules: any bucket of a cloud, to this destination
    tagged: list[Location] = Field(default_factory=list)
    reply_queues: list[str] = Field(default_factory=list)
    max_relays: int = Field(2, ge=0)
    max_gateways_per_region: int = Field(8, ge=1)

    @classmethod
    def build(
        cls,
        *,
        transfer_locations: list[str],
        rules: ReplicationConfig | None,
        reply_queues: list[str],
        results_queue: str | None,
        max_relays: int = 2,
        max_gateways_per_region: int = 8,
    ) -> Admission:
        """The rules from a deployment's settings (each location a URI)."""
        locations = [
            _any_bucket(text) or Location.of(_location(text)) for text in transfer_locations
        ]
        routes: list[tuple[RuleSource, Location]] = []
        tagged: list[Location] = []
        for rule in rules.rules if rules else []:
            dst = Location.of(_location(rule.destination))
            if rule.source_bucket:
                routes.append((RuleSource(bucket=rule.source_bucket, prefix=rule.prefix), dst))
            else:
                tagged.append(dst)
        queues = [q for q in [*reply_queues, results_queue] if q]
        return cls(
            locations=locations,
            routes=routes,
            tagged=tagged,
            reply_queues=queues,
            max_relays=max_relays,
            max_gateways_per_region=max_gateways_per_region,
        )

    def reply_allowed(self, reply_to: str | None) -> bool:
        return reply_to is None or reply_to in self.reply_queues

    def check(self, request: TransferRequest) -> None:
        """Raise UsageError (one line, naming the field) unless ``request`` is admitted."""
        if not self.reply_allowed(request.reply_to):
            raise UsageError(
                f"reply_to {request.reply_to!r} is not an allowed reply queue of this deployment"
            )
        options = request.options
        if len(options.relays) > self.max_relays:
            raise UsageError(
                f"options.relays: {len(options.relays)} relays, more than this deployment "
                f"allows per job ({self.max_relays})"
            )
        if options.gateways_per_region > self.max_gateways_per_region:
            raise UsageError(
                f"options.gateways_per_region: {options.gateways_per_region}, more than this "
                f"deployment allows ({self.max_gateways_per_region})"
            )
        src = request.source_uri
        for text in request.all_destinations:  # a multicast job: every destination
            dst = parse_uri(text)
            if not self._admits(src, dst):
                where = "source" if not self._known(src) else "destination"
                uri = src if where == "source" else dst
                raise UsageError(
                    f"{where} {uri} is not a location this deployment transfers "
                    "(its replication rules and transfer locations)"
                )

    def _admits(self, src: StoreURI, dst: StoreURI) -> bool:
        if any(loc.holds(src) for loc in self.locations) and any(
            loc.holds(dst) for loc in self.locations
        ):
            return True
        for rule_src, rule_dst in self.routes:
            if rule_src.holds(src) and rule_dst.holds(dst):
                return True
        return any(
            src.scheme != "local" and ".." not in src.key.split("/") and rule_dst.holds(dst)
            for rule_dst in self.tagged
        )

    def _known(self, uri: StoreURI) -> bool:
        return (
            any(loc.holds(uri) for loc in self.locations)
            or any(src.holds(uri) for src, _ in self.routes)
            or (uri.scheme != "local" and bool(self.tagged))
        )


def check_locations(texts: list[str]) -> list[str]:
    """``texts`` when each is a transfer location (deployments check them before
    the functions would); ValueError naming the first that is not (a pydantic
    validator)."""
    for text in texts:
        if _any_bucket(text) is None:
            try:
                _location(text)
            except UsageError as exc:
                raise ValueError(str(exc)) from None
    return texts


def _any_bucket(text: str) -> Location | None:
    match = _ANY_BUCKET.match(text.strip())
    if match is None:
        return None
    scheme, account = match.groups()
    return Location(store_id=f"az://{account}/*" if account else f"{scheme}://*")


def _location(text: str) -> StoreURI:
    uri = parse_uri(text)
    if uri.scheme == "local" and not text.startswith(("file://", "/")):
        raise UsageError(f"transfer location {text!r}: a local location is an absolute path")
    return uri
