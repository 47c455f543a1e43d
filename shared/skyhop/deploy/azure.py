"""``skyhop deploy azure``: the control plane as an Azure Function App (Linux, Python).

What it makes or updates, in RESOURCE_GROUP (azure-mgmt-resource, azure-mgmt-web):

* the resource group, and the requests, events (and results) queues in the
  storage account of the ``AzureWebJobsStorage`` connection (azure-storage-queue);
* a Consumption plan (``Y1``, Linux) and the function app on it, with the app
  settings the functions read (``SKYHOP_*``, the queue names their triggers bind to);
* the gateways' skyhop: the wheel of the code being deployed, uploaded once (by its
  SHA-256) to the ``skyhop-gateways`` container of that storage account
  (:mod:`skyhop.compute.azure_wheel`) and named in ``SKYHOP_COMPUTE_OPTIONS``
  (``wheel``), so every launch signs a read-only SAS URL of it for its VMs, which
  install it by hash (``compute_options`` naming ``wheel`` or ``package_spec`` win);
* the code: the archive of :mod:`skyhop.deploy.package`, zip-deployed through
  the app's Kudu endpoint (``POST /api/zipdeploy?isAsync=true`` with an Entra
  bearer token; the remote build installs ``requirements.txt``), waiting until
  Kudu reports the deployment complete;
* for each storage account named in ``event_sources`` (full resource ids), an
  Event Grid subscription sending ``BlobCreated`` / ``BlobDeleted`` to the
  ``on_blob_event`` function (a generic ARM resource, API version
  ``2022-06-15``, so no Event Grid SDK is needed).

``destroy`` removes the Event Grid subscriptions, the function app and its plan
(the queues and the resource group stay: they may hold messages or other things).
The manifest is Table Storage in the function app's own storage account by
default (``aztable://ACCOUNT/skyhopmanifest``, the account of the
``AzureWebJobsStorage`` connection; the deploy creates the table).
``--manifest dynamodb://TABLE`` keeps it in DynamoDB instead (the functions
then need AWS credentials); a ``sqlite://`` path is private to one instance
and only fit for a trial.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, Field, SecretStr

from skyhop.controlplane.admission import check_locations
from skyhop.deploy.package import SourceArchive
from skyhop.deploy.report import DeployReport, FunctionResult
from skyhop.errors import (
    AccessError,
    NotFoundError,
    SkyhopError,
    StoreError,
    UsageError,
    first_line,
    translated,
)
from skyhop.models import ReplicationConfig

T = TypeVar("T")

ARM_SCOPE = "https://management.azure.com/.default"
EVENTGRID_API = "2022-06-15"
BLOB_EVENTS = ["Microsoft.Storage.BlobCreated", "Microsoft.Storage.BlobDeleted"]
FUNCTIONS = ["on_request", "on_gateway_event", "on_blob_event", "reaper"]
_ACCOUNT_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Storage/storageAccounts/[a-z0-9]{3,24}$",
    re.IGNORECASE,
)
KUDU_SUCCESS, KUDU_FAILED = 4, 3
MANIFEST_TABLE = "skyhopmanifest"


class AzureDeployConfig(BaseModel):
    subscription_id: str = Field(min_length=1)
    resource_group: str = Field("skyhop", pattern=r"^[-\w._()]{1,90}$")
    location: str = Field(pattern=r"^[a-z0-9]+$")
    app_name: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]{0,58}[a-z0-9]$")
    plan_name: str | None = None
    storage_connection_string: SecretStr
    manifest: str | None = Field(
        None,
        description="SKYHOP_MANIFEST of the functions (default: Table Storage in the app's account)",
    )
    rules: ReplicationConfig | None = None
    transfer_locations: Annotated[list[str], AfterValidator(check_locations)] = Field(
        default_factory=list,
        description="SKYHOP_TRANSFER_LOCATIONS: locations ad-hoc requests may read and write "
        "besides the rules' (controlplane.admission)",
    )
    requests_queue: str = "skyhop-requests"
    events_queue: str = "skyhop-events"
    results_queue: str | None = None
    compute_options: dict[str, Any] = Field(default_factory=dict)
    event_sources: list[str] = Field(
        default_factory=list, description="storage account resource ids whose blob events replicate"
    )
    python_version: str = "3.11"

    @property
    def plan(self) -> str:
        return self.plan_name or f"{self.app_name}-plan"

    @property
    def account(self) -> str:
        """The storage account of the connection string, read as the stores, queues
        and manifest read it (the Azure kit's parser)."""
        from skyhop.clouds.azure import connection_string_account  # the SDK, lazily

        account = connection_string_account(self.storage_connection_string.get_secret_value())
        if not account:
            raise UsageError(
                "the storage connection string names no AccountName (nor a blob, queue "
                "or table endpoint of an account)"
            )
        return account

    @property
    def manifest_uri(self) -> str:
        """The functions' manifest: ``--manifest``, else Table Storage in the app's account."""
        return self.manifest or f"aztable://{self.account}/{MANIFEST_TABLE}"

    def app_settings(self, wheel: Mapping[str, Any] | None = None) -> dict[str, str]:
        """The function app's settings; ``wheel`` (an AzureWheel, dumped) is what the
        gateways install, unless ``compute_options`` say otherwise."""
        conn = self.storage_connection_string.get_secret_value()
        compute = {"subscription_id": self.subscription_id, **self.compute_options}
        if wheel is not None and not {"wheel", "package_spec"} & set(compute):
            compute["wheel"] = dict(wheel)
        settings = {
            "FUNCTIONS_EXTENSION_VERSION": "~4",
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "AzureWebJobsStorage": conn,
            "AzureWebJobsFeatureFlags": "EnableWorkerIndexing",
            "SCM_DO_BUILD_DURING_DEPLOYMENT": "true",
            "ENABLE_ORYX_BUILD": "true",
            "AZURE_STORAGE_CONNECTION_STRING": conn,
            "SKYHOP_MANIFEST": self.manifest_uri,
            "SKYHOP_COMPUTE": "azure",
            "SKYHOP_COMPUTE_OPTIONS": json.dumps(compute),
            "SKYHOP_REQUESTS_QUEUE": f"azq://{self.account}/{self.requests_queue}",
            "SKYHOP_EVENTS_QUEUE": f"azq://{self.account}/{self.events_queue}",
            "SKYHOP_REQUESTS_QUEUE_NAME": self.requests_queue,
            "SKYHOP_EVENTS_QUEUE_NAME": self.events_queue,
            "SKYHOP_HOME": "/tmp/skyhop",  # noqa: S108 - the function sandbox's own /tmp
        }
        if self.results_queue:
            settings["SKYHOP_RESULTS_QUEUE"] = f"azq://{self.account}/{self.results_queue}"
        if self.rules is not None:
            settings["SKYHOP_RULES"] = self.rules.model_dump_json()
        if self.transfer_locations:
            settings["SKYHOP_TRANSFER_LOCATIONS"] = ",".join(self.transfer_locations)
        return settings


class AzureDeployer:
    """Creates, updates and deletes the control plane's Function App."""

    def __init__(
        self,
        config: AzureDeployConfig,
        *,
        credential: Any = None,
        base_url: str | None = None,
        scm_url: str | None = None,
        client_kwargs: dict[str, Any] | None = None,
        poll_interval: float = 5.0,
        timeout: float = 1800.0,
    ) -> None:
        for source in config.event_sources:
            if not _ACCOUNT_ID.match(source):
                raise UsageError(
                    f"not a storage account resource id: {source!r} "
                    "(/subscriptions/S/resourceGroups/G/providers/Microsoft.Storage/storageAccounts/NAME)"
                )
        self.config = config
        self._credential = credential
        self._base_url = base_url
        self.scm_url = scm_url
        self._client_kwargs = dict(client_kwargs or {})
        self.poll_interval = poll_interval
        self.timeout = timeout
        self._clients: dict[str, Any] = {}

    # ------------------------------------------------------------ clients

    @property
    def credential(self) -> Any:
        if self._credential is None:
            from azure.identity import DefaultAzureCredential

            self._credential = DefaultAzureCredential()
        return self._credential

    def _client(self, kind: str) -> Any:
        if kind not in self._clients:
            if kind == "web":
                from azure.mgmt.web import WebSiteManagementClient as cls
            else:
                try:
                    from azure.mgmt.resource import ResourceManagementClient as cls
                except ImportError:  # moved between major versions
                    from azure.mgmt.resource.resources import ResourceManagementClient as cls
            kwargs = dict(self._client_kwargs)
            if self._base_url:
                kwargs["base_url"] = self._base_url
            self._clients[kind] = _call(
                lambda: cls(self.credential, self.config.subscription_id, **kwargs),
                "connect to Azure",
            )
        return self._clients[kind]

    # ------------------------------------------------------------ steps

    def queues(self) -> list[str]:
        """Create the queues the functions bind to (existing ones are kept)."""
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.queue import QueueClient

        made = []
        conn = self.config.storage_connection_string.get_secret_value()
        names = [self.config.requests_queue, self.config.events_queue, self.config.results_queue]
        for name in filter(None, names):
            client = QueueClient.from_connection_string(conn, name)
            try:
                _call(
                    client.create_queue, f"queue {name}: create", passthrough=(ResourceExistsError,)
                )
                made.append(name)
            except ResourceExistsError:
                pass
        return made

    def manifest_table(self) -> bool:
        """For an ``aztable://`` manifest in the app's storage account: create its
        table (an existing one is kept); True when it was created."""
        from azure.core.exceptions import ResourceExistsError
        from azure.data.tables import TableServiceClient

        from skyhop.state.azure_tables import parse_aztable

        account, table = parse_aztable(self.config.manifest_uri)
        if account != self.config.account:
            return False
        conn = self.config.storage_connection_string.get_secret_value()
        service = TableServiceClient.from_connection_string(conn)
        try:
            _call(
                lambda: service.create_table(table),
                f"table {table}: create",
                passthrough=(ResourceExistsError,),
            )
        except ResourceExistsError:
            return False
        return True

    def gateway_wheel(self) -> dict[str, Any] | None:
        """Upload the gateways' skyhop wheel to the app's storage account (once per
        digest); what ``SKYHOP_COMPUTE_OPTIONS`` names as ``wheel``. None when the
        compute options already say what the gateways install."""
        if {"wheel", "package_spec"} & set(self.config.compute_options):
            return None
        from skyhop.compute.azure_wheel import publish_wheel  # the SDK, lazily

        conn = self.config.storage_connection_string.get_secret_value()
        return publish_wheel(self.config.account, connection_string=conn).model_dump()

    def site(self, wheel: Mapping[str, Any] | None = None) -> Any:
        """The resource group, the plan and the function app, created or updated."""
        from azure.mgmt.web import models as wm

        c = self.config
        groups = self._client("resource").resource_groups
        _call(
            lambda: groups.create_or_update(c.resource_group, {"location": c.location}),
            f"resource group {c.resource_group}",
        )
        web = self._client("web")
        plan = _call(
            lambda: web.app_service_plans.begin_create_or_update(
                c.resource_group,
                c.plan,
                wm.AppServicePlan(
                    location=c.location,
                    kind="functionapp",
                    reserved=True,  # Linux
                    sku=wm.SkuDescription(name="Y1", tier="Dynamic"),
                    tags={"skyhop": "control-plane"},
                ),
            ).result(),
            f"plan {c.plan}",
        )
        settings = [wm.NameValuePair(name=k, value=v) for k, v in c.app_settings(wheel).items()]
        return _call(
            lambda: web.web_apps.begin_create_or_update(
                c.resource_group,
                c.app_name,
                wm.Site(
                    location=c.location,
                    kind="functionapp,linux",
                    server_farm_id=plan.id,
                    reserved=True,
                    https_only=True,
                    tags={"skyhop": "control-plane"},
                    site_config=wm.SiteConfig(
                        linux_fx_version=f"Python|{c.python_version}",
                        app_settings=settings,
                        ftps_state="Disabled",
                        min_tls_version="1.2",
                    ),
                ),
            ).result(),
            f"function app {c.app_name}",
        )

    def zip_deploy(self, source: SourceArchive, site: Any) -> str:
        """Push the archive to Kudu and wait for the deployment; returns its id."""
        import requests

        scm = self.scm_url or _scm_url(site, self.config.app_name)
        token = _call(lambda: self.credential.get_token(ARM_SCOPE).token, "get an Entra token")
        verify = self._client_kwargs.get("connection_verify", True)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        what = f"zip deploy to {self.config.app_name}"
        response = _call(
            lambda: session.post(
                f"{scm}/api/zipdeploy",
                params={"isAsync": "true"},
                data=source.data,
                headers={"Content-Type": "application/zip"},
                verify=verify,
                timeout=300,
            ),
            what,
        )
        _check(response, what)
        status_url = response.headers.get("Location") or f"{scm}/api/deployments/latest"
        deadline = time.monotonic() + self.timeout
        while True:
            answer = _call(
                lambda: session.get(status_url, verify=verify, timeout=60), what + ": status"
            )
            _check(answer, what + ": status")
            state = answer.json() if answer.content else {}
            if state.get("complete"):
                if int(state.get("status", 0)) != KUDU_SUCCESS:
                    raise SkyhopError(
                        f"{what} failed: {state.get('status_text') or state.get('message') or state}"
                    )
                return str(state.get("id", ""))
            if time.monotonic() > deadline:
                raise StoreError(f"{what}: not complete after {self.timeout:.0f} s", retryable=True)
            time.sleep(self.poll_interval)

    def subscriptions(self, site: Any) -> list[str]:
        """An Event Grid subscription per event source, to ``on_blob_event``."""
        made = []
        resources = self._client("resource").resources
        for account_id in self.config.event_sources:
            sub_id = self._subscription_id(account_id)
            body = {
                "properties": {
                    "destination": {
                        "endpointType": "AzureFunction",
                        "properties": {
                            "resourceId": f"{site.id}/functions/on_blob_event",
                            "maxEventsPerBatch": 1,
                        },
                    },
                    "filter": {"includedEventTypes": BLOB_EVENTS},
                    "eventDeliverySchema": "EventGridSchema",
                    "retryPolicy": {"maxDeliveryAttempts": 30, "eventTimeToLiveInMinutes": 1440},
                }
            }
            _call(
                lambda sub_id=sub_id, body=body: resources.begin_create_or_update_by_id(
                    sub_id, body, api_version=EVENTGRID_API
                ).result(),
                f"Event Grid subscription on {account_id.rsplit('/', 1)[-1]}",
            )
            made.append(sub_id)
        return made

    def _subscription_id(self, account_id: str) -> str:
        return (
            f"{account_id}/providers/Microsoft.EventGrid/eventSubscriptions/"
            f"{self.config.app_name}-blobs"
        )

    def deploy(self, source: SourceArchive) -> DeployReport:
        if source.target != "azure":
            raise UsageError(f"a {source.target} archive cannot be deployed to Azure Functions")
        report = DeployReport(target="azure")
        for name in self.queues():
            report.notes.append(f"created queue {name}")
        manifest = self.config.manifest_uri
        if manifest.startswith("aztable://") and self.manifest_table():
            report.notes.append(f"created table {manifest.rsplit('/', 1)[1]}")
        wheel = self.gateway_wheel()
        if wheel is not None:
            report.notes.append(
                f"gateway wheel az://{self.config.account}/{wheel['container']}/{wheel['blob']}"
            )
        existed = self._exists()
        site = self.site(wheel)
        deployment = self.zip_deploy(source, site)
        report.source = f"zipdeploy {deployment} ({source.name})"
        action = "updated" if existed else "created"
        base = f"https://{getattr(site, 'default_host_name', None) or self.config.app_name + '.azurewebsites.net'}"
        report.functions = [
            FunctionResult(function_id=f"{self.config.app_name}/{name}", action=action, url=base)
            for name in FUNCTIONS
        ]
        for sub in self.subscriptions(site):
            report.notes.append(f"blob events: {sub}")
        if not self.config.event_sources:
            report.notes.append(
                "no --events-from storage account: replication receives no blob events"
            )
        if manifest.startswith("aztable://"):
            report.notes.append(f"manifest {manifest}")
        elif manifest.startswith("dynamodb://"):
            report.notes.append(
                f"manifest {manifest}: the functions need AWS credentials for DynamoDB"
            )
        else:
            report.notes.append(
                f"manifest {manifest} is private to each function instance: "
                "keep the default Table Storage manifest beyond a trial"
            )
        return report

    def _exists(self) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        web = self._client("web")
        try:
            _call(
                lambda: web.web_apps.get(self.config.resource_group, self.config.app_name),
                "function app",
                passthrough=(ResourceNotFoundError,),
            )
        except ResourceNotFoundError:
            return False
        return True

    def destroy(self) -> DeployReport:
        report = DeployReport(target="azure")
        resources = self._client("resource").resources
        for account_id in self.config.event_sources:
            sub_id = self._subscription_id(account_id)
            _call(
                lambda sub_id=sub_id: resources.begin_delete_by_id(
                    sub_id, api_version=EVENTGRID_API
                ).result(),
                "delete Event Grid subscription",
            )
            report.notes.append(f"deleted {sub_id}")
        existed = self._exists()
        web = self._client("web")
        c = self.config
        _call(lambda: web.web_apps.delete(c.resource_group, c.app_name), "delete function app")
        _call(lambda: web.app_service_plans.delete(c.resource_group, c.plan), "delete plan")
        action = "deleted" if existed else "absent"
        report.functions = [
            FunctionResult(function_id=f"{c.app_name}/{name}", action=action) for name in FUNCTIONS
        ]
        return report


def _scm_url(site: Any, app: str) -> str:
    for host in getattr(site, "enabled_host_names", None) or []:
        if ".scm." in host:
            return f"https://{host}"
    return f"https://{app}.scm.azurewebsites.net"


def _check(response: Any, what: str) -> None:
    status = response.status_code
    if status < 400:
        return
    text = f"{status} {first_line(response.text or response.reason or '', limit=200)}".strip()
    if status in (401, 403):
        raise AccessError(f"{what}: access denied ({text})")
    if status == 404:
        raise NotFoundError(f"{what}: not found ({text})")
    raise StoreError(f"{what}: {text}", retryable=status in (408, 409, 429) or status >= 500)


def _call(fn: Callable[[], T], what: str, passthrough: tuple[type[Exception], ...] = ()) -> T:
    """Run one call; SDK errors become one-line SkyhopErrors (``passthrough`` ones are re-raised)."""
    return translated(fn, what, _classify, passthrough=passthrough)


def _classify(exc: Exception, what: str) -> SkyhopError:
    from azure.core import exceptions as aexc

    if isinstance(exc, aexc.HttpResponseError):
        status = exc.status_code or 0
        code = getattr(exc, "error", None)
        code = getattr(code, "code", None) or exc.reason or ""
        text = f"{status} {code}".strip()
        if status in (401, 403) or isinstance(exc, aexc.ClientAuthenticationError):
            return AccessError(f"{what}: access denied ({text})")
        if status == 404:
            return NotFoundError(f"{what}: not found ({text})")
        if status == 400:
            return UsageError(f"{what}: {text}: {first_line(exc.message or '', limit=200)}")
        return StoreError(f"{what}: {text}", retryable=status in (408, 409, 429) or status >= 500)
    if isinstance(exc, aexc.ClientAuthenticationError):
        return AccessError(f"{what}: no usable Azure credentials")
    if isinstance(exc, aexc.ServiceRequestError | aexc.ServiceResponseError | OSError):
        return StoreError(f"{what}: connection failed ({type(exc).__name__})", retryable=True)
    return SkyhopError(f"{what}: {first_line(exc)}")
