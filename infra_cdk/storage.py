"""The manifest table, the Powertools idempotency table and the data-key wrapping key."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from constructs import Construct


@dataclass(frozen=True)
class ManifestSchema:
    """Key schema of the manifest table; must match ``skyhop.state.dynamodb``."""

    partition_key: str = "pk"
    sort_key: str = "sk"
    gsi_name: str = "gsi1"
    gsi_partition_key: str = "gsi1pk"
    gsi_sort_key: str = "gsi1sk"
    ttl_attribute: str = "expires_at"


IDEMPOTENCY_KEY = "id"
IDEMPOTENCY_TTL = "expiration"


def manifest_schema() -> ManifestSchema:
    """The schema the DynamoDB manifest adapter uses."""
    return ManifestSchema()


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
        schema: ManifestSchema | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.schema = schema or manifest_schema()
        removal = RemovalPolicy.RETAIN if retain_data else RemovalPolicy.DESTROY
        s = self.schema
        self.manifest = dynamodb.TableV2(
            self,
            "Manifest",
            partition_key=dynamodb.Attribute(
                name=s.partition_key, type=dynamodb.AttributeType.STRING
            ),
            sort_key=dynamodb.Attribute(name=s.sort_key, type=dynamodb.AttributeType.STRING),
            global_secondary_indexes=[
                dynamodb.GlobalSecondaryIndexPropsV2(
                    index_name=s.gsi_name,
                    partition_key=dynamodb.Attribute(
                        name=s.gsi_partition_key, type=dynamodb.AttributeType.STRING
                    ),
                    sort_key=dynamodb.Attribute(
                        name=s.gsi_sort_key, type=dynamodb.AttributeType.STRING
                    ),
                )
            ],
            billing=dynamodb.Billing.on_demand(),
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute=s.ttl_attribute,
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
