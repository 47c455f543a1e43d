"""The queues of the control plane, each with a dead-letter queue and an alarm on it."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

MAX_RECEIVES = 5
RETENTION = Duration.days(14)


@dataclass(frozen=True)
class QueueSpec:
    """One work queue: its construct id, what it carries, and how long a consumer may hold a message."""

    id: str
    description: str
    visibility: Duration


class Messaging(Construct):
    """Requests, gateway events, bucket events and results queues.

    Every queue has a dead-letter queue (a message that failed ``MAX_RECEIVES``
    times is kept 14 days for inspection and redrive) and an alarm that fires
    as soon as its dead-letter queue holds a message. Queues use SQS-managed
    encryption (free, and accepted by EventBridge and S3 notifications without
    a key policy) and refuse plain-HTTP access.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        visibility: dict[str, Duration],
        alarm_email: str | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.alarm_topic = sns.Topic(
            self, "AlarmTopic", display_name="skyhop dead letters", enforce_ssl=True
        )
        if alarm_email:
            self.alarm_topic.add_subscription(subs.EmailSubscription(alarm_email))
        self.queues: dict[str, sqs.Queue] = {}
        self.dead_letter_queues: dict[str, sqs.Queue] = {}
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        for spec in (
            QueueSpec(
                "Requests", "transfer requests for the submit function", visibility["Requests"]
            ),
            QueueSpec("GatewayEvents", "events posted by gateways", visibility["GatewayEvents"]),
            QueueSpec(
                "BucketEvents", "S3 object events for replication", visibility["BucketEvents"]
            ),
            QueueSpec(
                "Results", "job results and notifications for other systems", visibility["Results"]
            ),
        ):
            self._add(spec)

    def _add(self, spec: QueueSpec) -> None:
        dlq = sqs.Queue(
            self,
            f"{spec.id}DeadLetters",
            retention_period=RETENTION,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        queue = sqs.Queue(
            self,
            spec.id,
            visibility_timeout=spec.visibility,
            retention_period=RETENTION,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(queue=dlq, max_receive_count=MAX_RECEIVES),
        )
        alarm = cloudwatch.Alarm(
            self,
            f"{spec.id}DeadLettersAlarm",
            alarm_description=f"skyhop: messages in the dead-letter queue of {spec.description}",
            metric=dlq.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(1), statistic="Maximum"
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(cw_actions.SnsAction(self.alarm_topic))
        self.queues[spec.id] = queue
        self.dead_letter_queues[spec.id] = dlq
        self.alarms[spec.id] = alarm

    @property
    def requests(self) -> sqs.Queue:
        return self.queues["Requests"]

    @property
    def gateway_events(self) -> sqs.Queue:
        return self.queues["GatewayEvents"]

    @property
    def bucket_events(self) -> sqs.Queue:
        return self.queues["BucketEvents"]

    @property
    def results(self) -> sqs.Queue:
        return self.queues["Results"]
