"""``skyhop deploy gcp``: the control plane as Cloud Functions (2nd gen).

What it makes, in PROJECT and REGION (all names start with ``prefix``):

=================================  ===========================================================
``PREFIX-requests``                ``on_request``, Eventarc Pub/Sub trigger on the requests topic
``PREFIX-gateway-events``          ``on_gateway_event``, Eventarc Pub/Sub trigger on the events topic
``PREFIX-obj-HASH-finalized``      ``on_gcs_object`` for ``google.cloud.storage.object.v1.finalized``
``PREFIX-obj-HASH-deleted``        ... and ``.deleted``, one pair per replicated bucket (HASH names it)
``PREFIX-reaper``                  ``reaper``, HTTP (point a Cloud Scheduler job at its URL)
=================================  ===========================================================

Every event trigger has retry policy ``RETRY``: the functions ack a bad message
and raise only on transient errors (see ``functions/common.py``). The topics
are created when missing (google-cloud-pubsub). The source zip
(:mod:`skyhop.deploy.package`) is uploaded to the staging bucket under
``skyhop-deploy/`` (through skyhop's own GCS store) and named by its SHA-256, and
each function is created, or updated when it exists (google-cloud-functions,
``functions_v2.FunctionServiceClient``), waiting for each operation.
``destroy`` deletes the functions (topics and staged archives stay).

The gateways' skyhop is the wheel of the code being deployed, uploaded once (by
its SHA-256) to ``gateway_bucket`` (default ``skyhop-gateways-PROJECT``, made
private when missing; :mod:`skyhop.compute.gce_wheel`) and named in
``SKYHOP_COMPUTE_OPTIONS`` (``wheel``): every launch hands its VMs a V4 signed URL
of it (signed through IAM ``signBlob`` as the functions' own service account),
or, where that account may not sign, the gateways fetch it with their own
service accounts' tokens, which the deploy grants ``roles/storage.objectViewer``
on that bucket (``compute_options`` naming ``wheel`` or ``package_spec`` win).

The manifest is Firestore in the same project by default
(``firestore://PROJECT/(default)/skyhop-manifest``): the deploy sets the TTL
policies on ``expires_at`` (google-cloud-firestore's admin client; they take
effect in the background); its queries need no composite index. ``--manifest dynamodb://TABLE`` keeps the manifest in
DynamoDB instead (the functions then need AWS credentials); a ``sqlite://``
path is private to one instance and only fit for a trial.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, Field

from skyhop.controlplane.admission import check_locations
from skyhop.deploy.package import SourceArchive
from skyhop.deploy.report import DeployReport, FunctionResult
from skyhop.errors import (
    SkyhopError,
    StoreError,
    UsageError,
    translated,
)
from skyhop.models import ReplicationConfig
from skyhop.stores.base import ObjectStore, open_store
from skyhop.uri import StoreURI, parse_uri

T = TypeVar("T")

STAGING_PREFIX = "skyhop-deploy/"
GCS_EVENTS = {
    "finalized": "google.cloud.storage.object.v1.finalized",
    "deleted": "google.cloud.storage.object.v1.deleted",
}
PUBSUB_EVENT = "google.cloud.pubsub.topic.v1.messagePublished"
FIRESTORE_COLLECTION = "skyhop-manifest"


class GCPDeployConfig(BaseModel):
    project: str = Field(pattern=r"^[a-z][a-z0-9\-]{4,28}[a-z0-9]$")
    region: str = Field("us-central1", pattern=r"^[a-z]+-[a-z]+[0-9]$")
    staging_bucket: str = Field(min_length=3)
    manifest: str | None = Field(
        None,
        description="SKYHOP_MANIFEST of the functions (default: Firestore in the same project)",
    )
    prefix: str = Field("skyhop", pattern=r"^[a-z][a-z0-9\-]{0,30}$")
    buckets: list[str] = Field(
        default_factory=list,
        description="buckets whose object events replicate (default: the rules')",
    )
    rules: ReplicationConfig | None = None
    transfer_locations: Annotated[list[str], AfterValidator(check_locations)] = Field(
        default_factory=list,
        description="SKYHOP_TRANSFER_LOCATIONS: locations ad-hoc requests may read and write "
        "besides the rules' (controlplane.admission)",
    )
    requests_topic: str = "skyhop-requests"
    events_topic: str = "skyhop-events"
    results_topic: str | None = None
    compute_options: dict[str, Any] = Field(default_factory=dict)
    gateway_bucket: str | None = Field(
        None, description="where the gateways' skyhop wheel goes (default skyhop-gateways-PROJECT)"
    )
    service_account: str | None = None
    runtime: str = "python311"
    memory: str = "1Gi"
    timeout_seconds: int = Field(540, ge=1, le=3600)
    max_instances: int = Field(20, ge=1)

    def replicated_buckets(self) -> list[str]:
        found = set(self.buckets)
        for rule in self.rules.rules if self.rules else []:
            if rule.source_bucket:
                found.add(rule.source_bucket)
        return sorted(found)

    @property
    def manifest_uri(self) -> str:
        """The functions' manifest: ``--manifest``, else Firestore in the same project."""
        return self.manifest or f"firestore://{self.project}/(default)/{FIRESTORE_COLLECTION}"

    @property
    def gateway_wheel_bucket(self) -> str:
        return self.gateway_bucket or f"skyhop-gateways-{self.project}"

    @property
    def installs_own_wheel(self) -> bool:
        """Whether the deploy publishes the gateways' wheel (unless the compute options
        say what the gateways install)."""
        return not {"wheel", "package_spec"} & set(self.compute_options)

    def environment(self, wheel: Mapping[str, Any] | None = None) -> dict[str, str]:
        """The functions' environment; ``wheel`` (a GCSWheel, dumped) is what the
        gateways install, unless ``compute_options`` say otherwise."""
        compute = {"project": self.project, **self.compute_options}
        if wheel is not None and self.installs_own_wheel:
            compute["wheel"] = dict(wheel)
        env = {
            "SKYHOP_MANIFEST": self.manifest_uri,
            "SKYHOP_COMPUTE": "gcp",
            "SKYHOP_COMPUTE_OPTIONS": json.dumps(compute),
            "SKYHOP_REQUESTS_QUEUE": f"pubsub://{self.project}/{self.requests_topic}",
            "SKYHOP_EVENTS_QUEUE": f"pubsub://{self.project}/{self.events_topic}",
            "SKYHOP_HOME": "/tmp/skyhop",  # noqa: S108 - the function sandbox's own /tmp
            "GOOGLE_CLOUD_PROJECT": self.project,
        }
        if self.results_topic:
            env["SKYHOP_RESULTS_QUEUE"] = f"pubsub://{self.project}/{self.results_topic}"
        if self.rules is not None:
            env["SKYHOP_RULES"] = self.rules.model_dump_json()
        if self.transfer_locations:
            env["SKYHOP_TRANSFER_LOCATIONS"] = ",".join(self.transfer_locations)
        return env


class FunctionPlan(BaseModel):
    function_id: str
    entry_point: str
    trigger: Literal["pubsub", "gcs", "http"]
    topic: str | None = None
    bucket: str | None = None
    event_type: str | None = None


def plan_functions(config: GCPDeployConfig) -> list[FunctionPlan]:
    """The functions ``config`` deploys, in order."""
    p = config.prefix
    topic = f"projects/{config.project}/topics/"
    out = [
        FunctionPlan(
            function_id=f"{p}-requests",
            entry_point="on_request",
            trigger="pubsub",
            topic=topic + config.requests_topic,
        ),
        FunctionPlan(
            function_id=f"{p}-gateway-events",
            entry_point="on_gateway_event",
            trigger="pubsub",
            topic=topic + config.events_topic,
        ),
    ]
    for bucket in config.replicated_buckets():
        tag = hashlib.sha256(bucket.encode()).hexdigest()[:10]
        for kind, event_type in GCS_EVENTS.items():
            out.append(
                FunctionPlan(
                    function_id=f"{p}-obj-{tag}-{kind}",
                    entry_point="on_gcs_object",
                    trigger="gcs",
                    bucket=bucket,
                    event_type=event_type,
                )
            )
    out.append(FunctionPlan(function_id=f"{p}-reaper", entry_point="reaper", trigger="http"))
    return out


class GCPDeployer:
    """Creates, updates and deletes the control plane's Cloud Functions."""

    def __init__(
        self,
        config: GCPDeployConfig,
        *,
        credentials: Any = None,
        api_endpoint: str | None = None,
        client: Any = None,
        publisher: Any = None,
        firestore_admin: Any = None,
        ensure_topics: bool = True,
        ensure_manifest: bool = True,
        stores: Callable[[StoreURI], ObjectStore] = open_store,
        timeout: float = 900.0,
    ) -> None:
        self.config = config
        self._credentials = credentials
        self._api_endpoint = api_endpoint
        self._client = client
        self._publisher = publisher
        self._firestore_admin = firestore_admin
        self.ensure_topics = ensure_topics
        self.ensure_manifest = ensure_manifest
        self.stores = stores
        self.timeout = timeout
        self.parent = f"projects/{config.project}/locations/{config.region}"
        self._wheel: dict[str, Any] | None = None

    # ------------------------------------------------------------ clients

    @property
    def client(self) -> Any:
        if self._client is None:
            from google.cloud import functions_v2

            kwargs: dict[str, Any] = {}
            if self._credentials is not None:
                kwargs["credentials"] = self._credentials
            if self._api_endpoint is not None:
                kwargs["client_options"] = {"api_endpoint": self._api_endpoint}
                kwargs["transport"] = "rest"
            self._client = _call(
                lambda: functions_v2.FunctionServiceClient(**kwargs), "Cloud Functions: connect"
            )
        return self._client

    @property
    def publisher(self) -> Any:
        if self._publisher is None:
            from google.cloud import pubsub_v1

            self._publisher = _call(pubsub_v1.PublisherClient, "Pub/Sub: connect")
        return self._publisher

    @property
    def firestore_admin(self) -> Any:
        if self._firestore_admin is None:
            from google.cloud import firestore_admin_v1

            kwargs: dict[str, Any] = {}
            if self._credentials is not None:
                kwargs["credentials"] = self._credentials
            self._firestore_admin = _call(
                lambda: firestore_admin_v1.FirestoreAdminClient(**kwargs), "Firestore: connect"
            )
        return self._firestore_admin

    # ------------------------------------------------------------ steps

    def firestore_manifest(self) -> list[str]:
        """For a ``firestore://`` manifest: TTL on ``expires_at`` of its collection
        groups (the job collection, objects, chunks, counters); returns what was
        asked for. TTL policies take effect in the background. Its queries need
        no composite index."""
        from google.cloud import firestore_admin_v1 as admin
        from google.protobuf import field_mask_pb2

        from skyhop.state.firestore import SUBCOLLECTIONS, TTL_FIELD, parse_firestore

        project, database, collection = parse_firestore(self.config.manifest_uri)
        root = f"projects/{project}/databases/{database}/collectionGroups"
        done = []
        for group in (collection, *SUBCOLLECTIONS):
            field = admin.Field(
                name=f"{root}/{group}/fields/{TTL_FIELD}", ttl_config=admin.Field.TtlConfig()
            )
            _call(
                lambda field=field: self.firestore_admin.update_field(
                    request={
                        "field": field,
                        "update_mask": field_mask_pb2.FieldMask(paths=["ttl_config"]),
                    }
                ),
                f"Firestore: TTL on {group}.{TTL_FIELD}",
            )
            done.append(f"TTL {group}.{TTL_FIELD}")
        return done

    def upload(self, source: SourceArchive) -> tuple[str, str, int]:
        """Stage the archive; returns (bucket, object, generation)."""
        uri = parse_uri(f"gs://{self.config.staging_bucket}/{STAGING_PREFIX}{source.name}")
        info = self.stores(uri).put(uri.key, source.data)
        try:
            generation = int(info.etag or info.version or 0)
        except ValueError:
            generation = 0
        return uri.bucket, uri.key, generation

    def topics(self) -> list[str]:
        """Create the requests, events (and results) topics when missing."""
        from google.api_core import exceptions as gexc

        made = []
        names = [self.config.requests_topic, self.config.events_topic, self.config.results_topic]
        for name in filter(None, names):
            path = f"projects/{self.config.project}/topics/{name}"
            try:
                _call(
                    lambda path=path: self.publisher.create_topic(request={"name": path}),
                    f"Pub/Sub: create topic {name}",
                    passthrough=(gexc.AlreadyExists,),
                )
                made.append(name)
            except gexc.AlreadyExists:
                pass
        return made

    def gateway_wheel(self) -> dict[str, Any] | None:
        """Upload the gateways' skyhop wheel to the gateway bucket (once per digest),
        granting the gateways' service accounts (``compute_options``'
        ``service_accounts``) read on it; what ``SKYHOP_COMPUTE_OPTIONS`` names as
        ``wheel``. None when the compute options say what the gateways install."""
        if not self.config.installs_own_wheel:
            return None
        from google.auth.credentials import AnonymousCredentials

        from skyhop.compute import gce_wheel  # the SDK, lazily

        given = self._credentials
        if isinstance(given, AnonymousCredentials):
            given = None  # an endpoint that wants none: Storage as the defaults
        accounts = self.config.compute_options.get("service_accounts") or {}
        wheel = gce_wheel.publish_wheel(
            gce_wheel.client(self.config.project, given),
            self.config.gateway_wheel_bucket,
            location=self.config.region,
            readers=sorted(set(accounts.values())) if isinstance(accounts, dict) else (),
        )
        self._wheel = wheel.model_dump()
        return self._wheel

    def function(self, plan: FunctionPlan, storage: tuple[str, str, int]) -> Any:
        from google.cloud import functions_v2 as f

        bucket, obj, generation = storage
        env = self.config.environment(self._wheel)
        function = f.Function(
            name=f"{self.parent}/functions/{plan.function_id}",
            description=f"skyhop {plan.entry_point}",
            labels={"skyhop": "control-plane"},
            build_config=f.BuildConfig(
                runtime=self.config.runtime,
                entry_point=plan.entry_point,
                source=f.Source(
                    storage_source=f.StorageSource(
                        bucket=bucket, object_=obj, generation=generation
                    )
                ),
            ),
            service_config=f.ServiceConfig(
                available_memory=self.config.memory,
                timeout_seconds=self.config.timeout_seconds,
                max_instance_count=self.config.max_instances,
                environment_variables=env,
                ingress_settings=f.ServiceConfig.IngressSettings.ALLOW_INTERNAL_ONLY
                if plan.trigger != "http"
                else f.ServiceConfig.IngressSettings.ALLOW_ALL,
                service_account_email=self.config.service_account or "",
            ),
        )
        retry = f.EventTrigger.RetryPolicy.RETRY_POLICY_RETRY
        if plan.trigger == "pubsub":
            function.event_trigger = f.EventTrigger(
                event_type=PUBSUB_EVENT,
                pubsub_topic=plan.topic,
                retry_policy=retry,
                trigger_region=self.config.region,
                service_account_email=self.config.service_account or "",
            )
        elif plan.trigger == "gcs":
            function.event_trigger = f.EventTrigger(
                event_type=plan.event_type,
                event_filters=[f.EventFilter(attribute="bucket", value=plan.bucket)],
                retry_policy=retry,
                service_account_email=self.config.service_account or "",
            )
        return function

    def deploy(self, source: SourceArchive) -> DeployReport:
        """Stage the source, make sure the topics exist, create or update every function."""
        if source.target != "gcp":
            raise UsageError(f"a {source.target} archive cannot be deployed to Cloud Functions")
        report = DeployReport(target="gcp")
        storage = self.upload(source)
        report.source = f"gs://{storage[0]}/{storage[1]}#{storage[2]}"
        wheel = self.gateway_wheel()
        if wheel is not None:
            report.notes.append(f"gateway wheel gs://{wheel['bucket']}/{wheel['name']}")
            who = self.config.service_account or "the functions' service account"
            report.notes.append(
                f"{who} signs the gateways' wheel URLs (iam.serviceAccounts.signBlob on "
                "itself), or the gateways' service_accounts fetch it (granted read)"
            )
        if self.ensure_topics:
            for name in self.topics():
                report.notes.append(f"created topic {name}")
        manifest = self.config.manifest_uri
        if manifest.startswith("firestore://"):
            if self.ensure_manifest:
                asked = self.firestore_manifest()
                report.notes.append(f"manifest {manifest}: {', '.join(asked)}")
            else:
                report.notes.append(f"manifest {manifest}")
            who = self.config.service_account or "the functions' service account"
            report.notes.append(f"{who} needs roles/datastore.user for the Firestore manifest")
        elif manifest.startswith("dynamodb://"):
            report.notes.append(
                f"manifest {manifest}: the functions need AWS credentials for DynamoDB"
            )
        else:
            report.notes.append(
                f"manifest {manifest} is private to each function instance: "
                "keep the default Firestore manifest beyond a trial"
            )
        for plan in plan_functions(self.config):
            report.functions.append(self._apply(plan, storage))
        reaper = next((r for r in report.functions if r.function_id.endswith("-reaper")), None)
        if reaper and reaper.url:
            report.notes.append(
                f"schedule the reaper: a Cloud Scheduler job calling {reaper.url} every 5 minutes"
            )
        return report

    def _apply(self, plan: FunctionPlan, storage: tuple[str, str, int]) -> FunctionResult:
        from google.api_core import exceptions as gexc
        from google.protobuf import field_mask_pb2

        function = self.function(plan, storage)
        what = f"Cloud Functions: {plan.function_id}"
        try:
            _call(
                lambda: self.client.get_function(request={"name": function.name}),
                what,
                passthrough=(gexc.NotFound,),
            )
        except gexc.NotFound:
            operation = _call(
                lambda: self.client.create_function(
                    request={
                        "parent": self.parent,
                        "function": function,
                        "function_id": plan.function_id,
                    }
                ),
                what + ": create",
            )
            done = _call(lambda: operation.result(timeout=self.timeout), what + ": create")
            return FunctionResult(
                function_id=plan.function_id, action="created", url=done.url or None
            )
        paths = ["build_config", "service_config", "labels", "description"]
        if plan.trigger != "http":
            paths.append("event_trigger")
        operation = _call(
            lambda: self.client.update_function(
                request={
                    "function": function,
                    "update_mask": field_mask_pb2.FieldMask(paths=paths),
                }
            ),
            what + ": update",
        )
        done = _call(lambda: operation.result(timeout=self.timeout), what + ": update")
        return FunctionResult(function_id=plan.function_id, action="updated", url=done.url or None)

    def destroy(self) -> DeployReport:
        """Delete every function this config deploys (absent ones are skipped)."""
        from google.api_core import exceptions as gexc

        report = DeployReport(target="gcp")
        for plan in plan_functions(self.config):
            name = f"{self.parent}/functions/{plan.function_id}"
            what = f"Cloud Functions: {plan.function_id}: delete"
            try:
                operation = _call(
                    lambda name=name: self.client.delete_function(request={"name": name}),
                    what,
                    passthrough=(gexc.NotFound,),
                )
            except gexc.NotFound:
                report.functions.append(
                    FunctionResult(function_id=plan.function_id, action="absent")
                )
                continue
            _call(lambda operation=operation: operation.result(timeout=self.timeout), what)
            report.functions.append(FunctionResult(function_id=plan.function_id, action="deleted"))
        return report


def _call(fn: Callable[[], T], what: str, passthrough: tuple[type[Exception], ...] = ()) -> T:
    """Run one API call; SDK errors become one-line SkyhopErrors (``passthrough`` ones are re-raised)."""
    return translated(fn, what, _classify, passthrough=passthrough)


def _classify(exc: Exception, what: str) -> SkyhopError:
    from google.api_core import exceptions as gexc

    from skyhop.clouds import gcp

    detail = gcp.short(exc)
    found = gcp.known(exc, what)
    if found is not None:
        return found
    if isinstance(exc, gexc.InvalidArgument | gexc.FailedPrecondition):
        return UsageError(f"{what}: {detail}")
    if isinstance(exc, gexc.GoogleAPICallError | gexc.RetryError | TimeoutError | OSError):
        return StoreError(f"{what}: {detail}", retryable=True)
    return SkyhopError(f"{what}: {detail}")
