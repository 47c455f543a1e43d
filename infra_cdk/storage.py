"""The manifest table, the Powertools idempotency table and the data-key wrapping key."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from constructs import Construct

from skyhop.state import dynamodb as schema

IDEMPOTENCY_KEY = "id"
IDEMPOTENCY_TTL = "expiration"

_PROJECTIONS = {
    "ALL": dynamodb.ProjectionType.ALL,
    "KEYS_ONLY": dynamodb.ProjectionType.KEYS_ONLY,
}


def _string(name: str) -> dynamodb.Attribute:
    return dynamodb.Attribute(name=name, type=dynamodb.AttributeType.STRING)


class Storage(Construct):
    """DynamoDB tables (on demand, encrypted) and the KMS key that wraps per-job data keys.

    The manifest table keeps point-in-time recovery and, by default, survives
    ``cdk destroy`` (``retainData``); finished jobs expire through its TTL
    attribute. The idempotency table only holds short-lived Powertools records.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        retain_data: bool,
        key_alias: str,
    ) -> None:
        super().__init__(scope, id)
        removal = RemovalPolicy.RETAIN if retain_data else RemovalPolicy.DESTROY
        # The key schema, indexes and TTL attribute are skyhop.state.dynamodb's.
        self.manifest = dynamodb.TableV2(
            self,
            "Manifest",
            partition_key=_string(schema.PARTITION_KEY),
            sort_key=_string(schema.SORT_KEY),
            global_secondary_indexes=[
                dynamodb.GlobalSecondaryIndexPropsV2(
                    index_name=gsi.name,
                    partition_key=_string(gsi.partition_key),
                    sort_key=_string(gsi.sort_key),
                    projection_type=_PROJECTIONS[gsi.projection],
                )
                for gsi in schema.GLOBAL_SECONDARY_INDEXES
            ],
            billing=dynamodb.Billing.on_demand(),
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute=schema.TTL_ATTRIBUTE,
            encryption=dynamodb.TableEncryptionV2.aws_managed_key(),
            deletion_protection=retain_data,
            removal_policy=removal,
        )
        self.idempotency = dynamodb.TableV2(
            self,
            "Idempotency",
            partition_key=dynamodb.Attribute(
                name=IDEMPOTENCY_KEY, type=dynamodb.AttributeType.STRING
            ),
            billing=dynamodb.Billing.on_demand(),
            # its records are small and short-lived; recovery keeps a bad write undoable
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute=IDEMPOTENCY_TTL,
            encryption=dynamodb.TableEncryptionV2.aws_managed_key(),
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.data_key = kms.Key(
            self,
            "DataKeyWrapping",
            description="skyhop: wraps per-job data keys for destination gateways",
            enable_key_rotation=True,
            alias=key_alias,
            pending_window=Duration.days(7),
            removal_policy=removal,
        )
