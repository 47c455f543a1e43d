"""Account-wide replication: S3 object events for the rules' buckets into the bucket-events queue."""

from __future__ import annotations

from pathlib import Path

import jsii
from aws_cdk import Aws
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk.interfaces import aws_s3 as s3_refs
from constructs import Construct

from infra_cdk import permissions
from infra_cdk.rules import (
    DataAccess,
    NotificationMode,
    bucket_notifications,
    check_rules,
    data_access,
    load_rules,
    rules_json,
    subscriptions,
)
from skyhop.models import ReplicationConfig

#: S3 -> SQS event types per notification kind. A lifecycle expiration removes an
#: object as a DELETE does (EventBridge's ``Object Deleted`` carries both), so a rule
#: that propagates deletes hears of both on either path.
_S3_EVENTS = {
    "created": (s3.EventType.OBJECT_CREATED,),
    "removed": (s3.EventType.OBJECT_REMOVED, s3.EventType.LIFECYCLE_EXPIRATION),
}


@jsii.implements(s3.IBucketNotificationDestination)
class AccountQueueDestination:
    """S3 -> SQS notifications whose queue policy admits S3 only for this bucket *and*
    this account (``aws:SourceArn`` and ``aws:SourceAccount``): a bucket ARN names no
    account, so without the account a bucket of the same name that another account
    created after this one was deleted could still send events (the confused deputy
    AWS's S3 notification guide warns of). CDK's ``SqsDestination`` sets only the ARN.
    """

    def __init__(self, queue: sqs.IQueue) -> None:
        self.queue = queue
        self._bound: list[str] = []  # node paths of the buckets allowed

    def bind(
        self,
        scope: Construct,
        bucket: s3_refs.IBucketRef,
    ) -> s3.BucketNotificationDestinationConfig:
        """Add the queue policy statement for ``bucket`` (once) and name the queue."""
        if bucket.node.path not in self._bound:
            self._allow(bucket)
        return s3.BucketNotificationDestinationConfig(
            arn=self.queue.queue_arn,
            type=s3.BucketNotificationDestinationType.QUEUE,
            dependencies=[self.queue],
        )

    def _allow(self, bucket: s3_refs.IBucketRef) -> None:
        self._bound.append(bucket.node.path)
        self.queue.add_to_resource_policy(
            iam.PolicyStatement(
                sid=f"BucketEvents{len(self._bound)}",
                principals=[iam.ServicePrincipal("s3.amazonaws.com")],
                actions=["sqs:SendMessage"],
                resources=[self.queue.queue_arn],
                conditions={
                    "ArnLike": {"aws:SourceArn": bucket.bucket_ref.bucket_arn},
                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                },
            )
        )


class ReplicationRules(Construct):
    """Wire replication rules to the bucket-events queue.

    ``rules`` is a validated :class:`ReplicationConfig` or the path of a YAML or
    JSON rules file (a bad file raises :class:`infra_cdk.rules.RulesFileError`
    naming the rule, which fails synthesis).

    ``mode="eventbridge"`` (the default): EventBridge notifications are turned
    on for every named source bucket, and one EventBridge rule per replication
    rule matches ``Object Created`` (plus ``Object Deleted`` when the rule
    propagates deletes) for its bucket and prefix; rules that select buckets by
    tag match that prefix in every bucket of the account, and the function keeps
    the events of buckets carrying the tag. ``mode="sqs"``: S3 sends the events
    of each named bucket straight to the queue (no EventBridge; tag selectors
    are refused).

    The validated rules are also configuration: :attr:`rules_json` is what the
    ``bucket_events`` function reads from ``SKYHOP_RULES``, and
    :meth:`grant_replication` gives a function exactly the S3 access the rules
    need.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        rules: ReplicationConfig | Path | str,
        queue: sqs.IQueue,
        mode: NotificationMode = "eventbridge",
        where: str | None = None,
    ) -> None:
        super().__init__(scope, id)
        if isinstance(rules, ReplicationConfig):
            where = where or "replication rules"
            self.config = rules
        else:
            where = where or f"rules file {rules}"
            self.config = load_rules(rules)
        check_rules(self.config, where=where, mode=mode)
        self.mode = mode
        self.rules_json = rules_json(self.config, where=where)
        self.access: DataAccess = data_access(self.config)
        self.event_rules: dict[str, events.Rule] = {}
        self._buckets: dict[str, s3.IBucket] = {}
        if mode == "eventbridge":
            self._wire_eventbridge(queue)
        else:
            self._wire_sqs(queue)

    def _bucket(self, name: str) -> s3.IBucket:
        if name not in self._buckets:
            self._buckets[name] = s3.Bucket.from_bucket_name(self, f"Source-{name}", name)
        return self._buckets[name]

    def _wire_eventbridge(self, queue: sqs.IQueue) -> None:
        target = targets.SqsQueue(queue)
        enabled: set[str] = set()
        for sub in subscriptions(self.config):
            if sub.bucket is not None and sub.bucket not in enabled:
                self._bucket(sub.bucket).enable_event_bridge_notification()
                enabled.add(sub.bucket)
            pattern = sub.event_pattern()
            self.event_rules[sub.rule] = events.Rule(
                self,
                f"Rule-{sub.rule}",
                description=f"skyhop replication rule {sub.rule}",
                event_pattern=events.EventPattern(
                    source=pattern["source"],
                    detail_type=pattern["detail-type"],
                    detail=pattern.get("detail"),
                ),
                targets=[target],
            )

    def _wire_sqs(self, queue: sqs.IQueue) -> None:
        destination = AccountQueueDestination(queue)
        for note in bucket_notifications(self.config):
            filters = [s3.NotificationKeyFilter(prefix=note.prefix)] if note.prefix else []
            for event in _S3_EVENTS[note.kind]:
                self._bucket(note.bucket).add_event_notification(event, destination, *filters)

    @property
    def buckets(self) -> list[str]:
        """Every named S3 bucket the rules read or write."""
        return self.access.buckets

    def grant_replication(self, grantee: iam.IGrantable) -> None:
        """Read each rule's source prefix, write (and maybe delete) under its S3 destination."""
        for statement in permissions.s3_replication_access(self.access):
            grantee.grant_principal.add_to_principal_policy(statement)
