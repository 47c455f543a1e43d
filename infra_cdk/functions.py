"""The four control-plane Lambda functions, their code, layers, logs, roles and triggers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy, Stage
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from infra_cdk import packaging, permissions

PYTHON = lambda_.Runtime.PYTHON_3_12
REAPER_RATE = Duration.minutes(5)


@dataclass(frozen=True)
class FunctionSpec:
    """One function: module under ``functions/aws/``, size, time limit and SQS trigger shape."""

    id: str
    module: str
    description: str
    memory_mb: int
    timeout: Duration
    concurrency: int
    batch_size: int = 10
    batching_window: Duration | None = None

    @property
    def handler(self) -> str:
        return f"functions.aws.{self.module}.handler"

    @property
    def queue_visibility(self) -> Duration:
        """Six times the function's timeout, as AWS advises for SQS event sources."""
        return Duration.seconds(6 * self.timeout.to_seconds())


SPECS: dict[str, FunctionSpec] = {
    "Submit": FunctionSpec(
        "Submit",
        "submit",
        "skyhop: validate a transfer request, plan it, start its gateways",
        memory_mb=1024,
        # launching waits for the gateways to boot and accept connections
        timeout=Duration.minutes(15),
        # each run may start a job's gateways: at most this many jobs start at once
        concurrency=5,
        batch_size=1,
    ),
    "GatewayEvents": FunctionSpec(
        "GatewayEvents",
        "gateway_events",
        "skyhop: record gateway events, complete objects, finish jobs",
        memory_mb=512,
        # finishing a job lists the destination and waits for its gateways to terminate
        timeout=Duration.minutes(5),
        concurrency=10,
        batch_size=25,
        batching_window=Duration.seconds(1),
    ),
    "BucketEvents": FunctionSpec(
        "BucketEvents",
        "bucket_events",
        "skyhop: replicate new and deleted objects by the replication rules",
        memory_mb=1024,
        timeout=Duration.minutes(5),
        concurrency=10,
        batch_size=10,
    ),
    "Reaper": FunctionSpec(
        "Reaper",
        "reaper",
        "skyhop: redispatch stuck work, finish or fail jobs, remove what crashes left behind",
        memory_mb=512,
        timeout=Duration.minutes(15),
        # one run at a time: a run lasting past the next schedule never overlaps it
        concurrency=1,
    ),
}

# SQS event sources take at least 2 concurrent invocations (ScalingConfig).
MIN_EVENT_SOURCE_CONCURRENCY = 2


def powertools_parameter(architecture: str, version: str) -> str:
    """The public SSM parameter holding the official Powertools layer ARN for this runtime."""
    return f"/aws/service/powertools/python/{architecture}/python3.12/{version}"


class ControlFunctions(Construct):
    """The functions ``submit``, ``gateway_events``, ``bucket_events`` and ``reaper``.

    All four share one code asset (``functions/aws/`` + ``skyhop``) and two
    layers (Powertools, the dependencies). Each has its own role with nothing
    but the statements the stack adds and its own log group; the three queue
    consumers report partial batch failures; the reaper runs every five minutes.

    Each function has reserved concurrency (:attr:`FunctionSpec.concurrency`), so
    a flood of requests or events can neither start more jobs at once nor starve
    the account's other functions; the SQS event sources have the same maximum
    concurrency, so their pollers never take more messages than the function may
    run (no throttled batches on their way to the dead-letter queue). The reaper
    runs alone: its reserved concurrency is 1 and a scheduled run that finds the
    previous one still running is dropped (no retries, events expire before the
    next schedule) instead of queueing up behind it.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        architecture: str,
        environment: dict[str, str],
        triggers: dict[str, sqs.IQueue],
        log_retention_days: int,
        powertools_version: str = "latest",
        powertools_layer_arn: str | None = None,
        dependencies_layer_arn: str | None = None,
        wheelhouse: Path | None = None,
        extra_environment: dict[str, dict[str, str]] | None = None,
    ) -> None:
        super().__init__(scope, id)
        arch = (
            lambda_.Architecture.ARM_64 if architecture == "arm64" else lambda_.Architecture.X86_64
        )
        build = Path(Stage.of(self).outdir) / ".skyhop-build"
        self.code = lambda_.Code.from_asset(str(packaging.stage_source(build / "source")))
        self.powertools_layer = lambda_.LayerVersion.from_layer_version_arn(
            self,
            "Powertools",
            powertools_layer_arn
            or ssm.StringParameter.value_for_string_parameter(
                self, powertools_parameter(architecture, powertools_version)
            ),
        )
        if dependencies_layer_arn:
            self.dependencies_layer: lambda_.ILayerVersion = (
                lambda_.LayerVersion.from_layer_version_arn(
                    self, "Dependencies", dependencies_layer_arn
                )
            )
        else:
            requirements = packaging.stage_requirements(
                build / "dependencies", packaging.runtime_requirements()
            )
            self.dependencies_layer = lambda_.LayerVersion(
                self,
                "Dependencies",
                description="skyhop runtime dependencies (pydantic, cryptography, ...)",
                code=packaging.dependencies_code(
                    requirements, architecture=architecture, wheelhouse=wheelhouse
                ),
                compatible_runtimes=[PYTHON],
                compatible_architectures=[arch],
            )
        self.functions: dict[str, lambda_.Function] = {}
        self.roles: dict[str, iam.Role] = {}
        extra_environment = extra_environment or {}
        for spec in SPECS.values():
            role = iam.Role(
                self,
                f"{spec.id}Role",
                assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                description=f"skyhop {spec.module} function",
            )
            log_group = logs.LogGroup(
                self,
                f"{spec.id}Logs",
                retention=logs.RetentionDays.ONE_MONTH,
                removal_policy=RemovalPolicy.DESTROY,
            )
            log_group.node.default_child.retention_in_days = log_retention_days  # type: ignore[union-attr]
            role.add_to_principal_policy(permissions.log_writes(log_group.log_group_arn))
            fn = lambda_.Function(
                self,
                spec.id,
                description=spec.description,
                runtime=PYTHON,
                architecture=arch,
                handler=spec.handler,
                code=self.code,
                layers=[self.powertools_layer, self.dependencies_layer],
                memory_size=spec.memory_mb,
                timeout=spec.timeout,
                role=role,
                log_group=log_group,
                logging_format=lambda_.LoggingFormat.JSON,
                tracing=lambda_.Tracing.ACTIVE,
                environment={**environment, **extra_environment.get(spec.id, {})},
                reserved_concurrent_executions=spec.concurrency,
            )
            queue = triggers.get(spec.id)
            if queue is not None:
                fn.add_event_source(
                    sources.SqsEventSource(
                        queue,
                        batch_size=spec.batch_size,
                        max_batching_window=spec.batching_window,
                        report_batch_item_failures=True,
                        max_concurrency=max(spec.concurrency, MIN_EVENT_SOURCE_CONCURRENCY),
                    )
                )
            self.functions[spec.id] = fn
            self.roles[spec.id] = role
        # A scheduled run throttled by the one still running is dropped, not retried.
        self.functions["Reaper"].configure_async_invoke(max_event_age=REAPER_RATE, retry_attempts=0)
        self.schedule = events.Rule(
            self,
            "ReaperSchedule",
            description="skyhop: run the reaper",
            schedule=events.Schedule.rate(REAPER_RATE),
            targets=[targets.LambdaFunction(self.functions["Reaper"], retry_attempts=2)],
        )

    def grant(self, function_id: str, statements: list[iam.PolicyStatement]) -> None:
        """Add statements to one function's role."""
        for statement in statements:
            self.roles[function_id].add_to_principal_policy(statement)
