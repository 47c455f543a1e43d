"""ControlPlaneStack: everything skyhop's serverless control plane needs in one region."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack, Tags
from constructs import Construct

from infra_cdk import checkov_skips, nag, permissions
from infra_cdk.functions import SPECS, ControlFunctions
from infra_cdk.gateway import ROLE_DUTIES, GatewayFleet
from infra_cdk.messaging import Messaging
from infra_cdk.replication import ReplicationRules
from infra_cdk.settings import AppSettings, control_queue_prefix
from infra_cdk.storage import Storage
from skyhop.models import ReplicationConfig

# The names the handlers read (functions/aws/*).
ENV_TABLE = "SKYHOP_TABLE"
ENV_IDEMPOTENCY_TABLE = "SKYHOP_IDEMPOTENCY_TABLE"
ENV_REQUESTS_QUEUE = "SKYHOP_REQUESTS_QUEUE_URL"
ENV_EVENTS_QUEUE = "SKYHOP_EVENTS_QUEUE_URL"
ENV_BUCKET_EVENTS_QUEUE = "SKYHOP_BUCKET_EVENTS_QUEUE_URL"
ENV_RESULTS_QUEUE = "SKYHOP_RESULTS_QUEUE_URL"
ENV_KMS_KEY = "SKYHOP_KMS_KEY_ID"
ENV_RULES = "SKYHOP_RULES"
ENV_TRANSFER_LOCATIONS = "SKYHOP_TRANSFER_LOCATIONS"  # what requests may read and write
ENV_LAUNCH_TEMPLATE = "SKYHOP_LAUNCH_TEMPLATE_ID"
ENV_LAUNCH_TEMPLATE_NAME = "SKYHOP_LAUNCH_TEMPLATE_NAME"  # what EC2ComputeProvider takes
# EC2ComputeProvider's instance_profiles, by gateway role (SKYHOP_GATEWAY_SOURCE_PROFILE_ARN...)
ENV_INSTANCE_PROFILES = {r: f"SKYHOP_GATEWAY_{r.upper()}_PROFILE_ARN" for r in ROLE_DUTIES}
# EC2ComputeProvider's grantee_roles: only destinations get a job's data key
ENV_DESTINATION_ROLE = "SKYHOP_GATEWAY_DESTINATION_ROLE_ARN"
# the gateways' skyhop wheel (an S3 asset): EC2ComputeProvider's wheel, signed per launch
ENV_GATEWAY_WHEEL = "SKYHOP_GATEWAY_WHEEL"
ENV_REGIONS = "SKYHOP_REGIONS"  # where the reaper and teardown look for gateways
ENV_CONTROL_QUEUES = "SKYHOP_CONTROL_QUEUES"  # functions.common: sqs://PREFIX
ENV_HOME = "SKYHOP_HOME"  # reports and job files: only /tmp is writable in Lambda
LAMBDA_HOME = "/tmp/skyhop"  # noqa: S108 - the function sandbox's own /tmp
# Functions that start jobs (gateways get their orders through a queue each),
# tear them down and reap them (deleting the queues): submit, gateway_events, reaper.
CONTROL_QUEUE_USERS = ("Submit", "GatewayEvents", "Reaper")


class ControlPlaneStack(Stack):
    """Queues, tables, key, functions, gateway launch template and replication rules.

    Everything is serverless or idle until used: nothing runs (and nothing but
    storage, the key and the alarms is billed) until a request or an object
    event arrives. See ``infra_cdk/README.md``.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        settings: AppSettings,
        rules: ReplicationConfig | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, id, **kwargs)
        Tags.of(self).add(permissions.TAG_KEY, id)
        rules = rules or ReplicationConfig(rules=[])
        # One prefix names the control queues in the functions' environment and in
        # the ARN both the functions and the gateways are granted.
        self.control_queue_prefix = control_queue_prefix(id)
        where = f"rules file {settings.rules_file}" if settings.rules_file else "replication rules"

        self.messaging = Messaging(
            self,
            "Messaging",
            visibility={
                "Requests": SPECS["Submit"].queue_visibility,
                "GatewayEvents": SPECS["GatewayEvents"].queue_visibility,
                "BucketEvents": SPECS["BucketEvents"].queue_visibility,
                "Results": SPECS["GatewayEvents"].queue_visibility,
            },
            alarm_email=settings.alarm_email,
        )
        self.storage = Storage(
            self,
            "Storage",
            retain_data=settings.retain_data,
            key_alias=f"alias/{id.lower()}-data-keys",
        )
        self.gateway = GatewayFleet(
            self,
            "Gateway",
            instance_type=settings.gateway_instance_type,
            ami_id=settings.gateway_ami_id,
            volume_gib=settings.gateway_volume_gib,
            template_name=f"{id}-gateway",
        )
        self.replication = ReplicationRules(
            self,
            "Replication",
            rules=rules,
            queue=self.messaging.bucket_events,
            mode=settings.notification_mode,
            where=where,
        )
        m = self.messaging
        environment = {
            ENV_TABLE: self.storage.manifest.table_name,
            ENV_IDEMPOTENCY_TABLE: self.storage.idempotency.table_name,
            ENV_REQUESTS_QUEUE: m.requests.queue_url,
            ENV_EVENTS_QUEUE: m.gateway_events.queue_url,
            ENV_BUCKET_EVENTS_QUEUE: m.bucket_events.queue_url,
            ENV_RESULTS_QUEUE: m.results.queue_url,
            ENV_KMS_KEY: self.storage.data_key.key_arn,
            ENV_LAUNCH_TEMPLATE: self.gateway.launch_template.launch_template_id or "",
            ENV_LAUNCH_TEMPLATE_NAME: self.gateway.launch_template.launch_template_name or "",
            **{
                ENV_INSTANCE_PROFILES[role]: profile.instance_profile_arn
                for role, profile in self.gateway.instance_profiles.items()
            },
            ENV_DESTINATION_ROLE: self.gateway.roles["destination"].role_arn,
            ENV_GATEWAY_WHEEL: self.to_json_string(self.gateway.wheel),
            ENV_REGIONS: ",".join(settings.gateway_regions),
            ENV_TRANSFER_LOCATIONS: ",".join(f"s3://{b}" for b in settings.transfer_buckets),
            ENV_HOME: LAMBDA_HOME,
            "POWERTOOLS_SERVICE_NAME": "skyhop",
            "POWERTOOLS_METRICS_NAMESPACE": "skyhop",
        }
        self.functions = ControlFunctions(
            self,
            "Functions",
            architecture=settings.lambda_architecture,
            environment=environment,
            extra_environment={
                # the functions that start, tear down and reap jobs
                **dict.fromkeys(
                    CONTROL_QUEUE_USERS,
                    {ENV_CONTROL_QUEUES: f"sqs://{self.control_queue_prefix}"},
                ),
                "BucketEvents": {ENV_RULES: self.replication.rules_json},
                # requests are admitted between the rules' sources and destinations too
                "Submit": {
                    ENV_RULES: self.replication.rules_json,
                    ENV_CONTROL_QUEUES: f"sqs://{self.control_queue_prefix}",
                },
            },
            triggers={
                "Submit": m.requests,
                "GatewayEvents": m.gateway_events,
                "BucketEvents": m.bucket_events,
            },
            log_retention_days=settings.log_retention_days,
            powertools_version=settings.powertools_version,
            powertools_layer_arn=settings.powertools_layer_arn,
            dependencies_layer_arn=settings.dependencies_layer_arn,
            wheelhouse=settings.wheelhouse,
        )
        self._grant(settings)
        self._outputs()
        nag.acknowledge(self)
        checkov_skips.apply(self)

    def _grant(self, settings: AppSettings) -> None:
        """Least privilege: each role gets the statements for what its code does, nothing more."""
        fns = self.functions
        m = self.messaging
        table = self.storage.manifest.table_arn
        idempotency = self.storage.idempotency.table_arn
        key = self.storage.data_key.key_arn
        # ad-hoc transfers read and write the transfer buckets; the rules' buckets only
        # as the rules use them (sources read-only, destinations written)
        transfer = permissions.s3_transfer_access(
            "TransferData", settings.transfer_buckets, self.replication.access
        )

        gateway_role = self.gateway.roles["destination"].role_arn  # the one with a key grant
        ec2 = permissions.Ec2Scope(
            launch_template_arn=self.gateway.launch_template_arn,
            instance_profile_arns=[
                p.instance_profile_arn for _, p in sorted(self.gateway.instance_profiles.items())
            ],
            gateway_role_arns=[r.role_arn for _, r in sorted(self.gateway.roles.items())],
            gateway_regions=settings.gateway_regions,
        )
        common = [permissions.manifest_access(table), permissions.idempotency_access(idempotency)]
        control = permissions.control_queues_manage(self.control_queue_prefix)
        # submit: plan, create the data key, set up the network, launch, open the firewall
        # (and undo all of it when a launch fails).
        fns.grant(
            "Submit",
            [
                *common,
                permissions.send_to(
                    "PostEventsAndResults", [m.gateway_events.queue_arn, m.results.queue_arn]
                ),
                *permissions.kms_wrap(key, gateway_role),
                permissions.ec2_describe(),
                *permissions.ec2_network_setup(ec2),
                *permissions.ec2_launch(ec2),
                *permissions.ec2_open_firewall(ec2),
                *permissions.ec2_teardown(ec2),
                permissions.sign_gateway_wheel(self.gateway.wheel_object_arn),
                *control,
                *transfer,
            ],
        )
        # gateway_events: record events, complete objects, verify, tear the job down.
        fns.grant(
            "GatewayEvents",
            [
                *common,
                permissions.send_to("PostResults", [m.results.queue_arn]),
                permissions.kms_retire_grants(key),
                permissions.ec2_describe(),
                *permissions.ec2_teardown(ec2),
                *control,
                *transfer,
            ],
        )
        # bucket_events: copy small objects itself, hand bulk to submit as a TransferRequest.
        fns.grant(
            "BucketEvents",
            [
                *common,
                permissions.send_to(
                    "HandBulkToSubmitAndPostResults", [m.requests.queue_arn, m.results.queue_arn]
                ),
            ],
        )
        self.replication.grant_replication(fns.roles["BucketEvents"])
        # reaper: tear down gateways no live job needs, finish done jobs, redispatch stuck
        # chunks, and resume interrupted jobs on fresh gateways (so it launches, too).
        fns.grant(
            "Reaper",
            [
                *common,
                permissions.send_to("PostResults", [m.results.queue_arn]),
                *permissions.kms_wrap(key, gateway_role),
                permissions.ec2_describe(),
                *permissions.ec2_network_setup(ec2),
                *permissions.ec2_launch(ec2),
                *permissions.ec2_open_firewall(ec2),
                *permissions.ec2_teardown(ec2),
                permissions.sign_gateway_wheel(self.gateway.wheel_object_arn),
                *control,
                *transfer,
            ],
        )
        # gateways: each role its own identity. Every one takes its orders and posts its
        # events; a source reads the sources, a destination writes the destinations, a
        # relay touches no storage at all.
        storage = {
            "source": permissions.s3_source_gateway_access(
                "SourceGatewayRead", settings.transfer_buckets, self.replication.access
            ),
            "relay": [],
            "destination": permissions.s3_destination_gateway_access(
                "DestinationGatewayWrite", settings.transfer_buckets, self.replication.access
            ),
        }
        for role, iam_role in self.gateway.roles.items():
            for statement in [
                permissions.send_to("PostGatewayEvents", [m.gateway_events.queue_arn]),
                permissions.control_queues_consume(self.control_queue_prefix),
                *storage[role],
            ]:
                iam_role.add_to_principal_policy(statement)

    def _outputs(self) -> None:
        m = self.messaging
        values = {
            "RequestsQueueUrl": m.requests.queue_url,
            "GatewayEventsQueueUrl": m.gateway_events.queue_url,
            "BucketEventsQueueUrl": m.bucket_events.queue_url,
            "ResultsQueueUrl": m.results.queue_url,
            "ManifestTableName": self.storage.manifest.table_name,
            "DataKeyArn": self.storage.data_key.key_arn,
            "GatewayLaunchTemplateId": self.gateway.launch_template.launch_template_id or "",
            "GatewayLaunchTemplateName": self.gateway.launch_template.launch_template_name or "",
            **{
                f"Gateway{role.title()}RoleArn": r.role_arn
                for role, r in self.gateway.roles.items()
            },
            "AlarmTopicArn": m.alarm_topic.topic_arn,
        }
        for name, value in values.items():
            CfnOutput(self, name, value=value)
