"""Gateways on EC2 (data keys wrapped with AWS KMS: :mod:`skyhop.crypto.kms`).

Network (once per region, reused by every job): a VPC, a subnet with public
addresses and a route table of its own holding the default route to an internet
gateway, and the security group ``skyhop-gateways`` (which admits nothing), each
created tagged ``skyhop=network`` and found by that tag (the VPC's main route
table is left untouched, so the stack's routes can be granted on tagged tables
alone).

Firewall (per job): every job has its own security group per region,
``skyhop-job-JOB`` (tagged ``skyhop=network`` and ``skyhop:job=JOB``), and its
instances are in that group only, so one job's rules never admit anything to
another job's gateways. :meth:`EC2ComputeProvider.authorize` admits, in the
job's group of every region where it has gateways, TCP on the gateways' data
port from the ``/32`` address of each of the job's gateways, nothing else (plus
the control port from ``control_cidrs``, when given: a /16 at most). Each rule
is tagged ``skyhop:job=JOB`` and described ``skyhop:job=JOB``. :meth:`revoke`
removes the job's rules in every region (one region's failure does not stop the
others) and :meth:`terminate` deletes the job's groups once its instances are
gone; :meth:`firewall_jobs` names the jobs that still have rules or groups, so
the reaper removes those of finished jobs. (A region holds 2,500 security groups
by default.)

Gateways: one instance per :class:`~skyhop.models.GatewayConfig`, tagged
``skyhop=gateway``, ``skyhop:job=JOB``, ``skyhop:gateway=ID``,
``skyhop:role=ROLE`` (and its ports), with IMDSv2 required and
terminate-on-shutdown. Its user data (:func:`bootstrap_script`) is the
startup script every cloud's gateways share (:mod:`skyhop.compute.startup`):
it writes the configuration to ``/etc/skyhop/gateway.json`` (0600), installs
skyhop into a venv and starts ``python -m gateway_vm`` under systemd.
User data is readable by principals allowed ``ec2:DescribeInstanceAttribute``:
it holds a boot configuration with no private key, token or clear data key
(:meth:`launch` refuses one), only public material, a one-time enrolment token
and, for a destination, at most a KMS-wrapped key; the gateway's key, certificate
and token come after boot over mutual TLS or, sealed to a key it made, on its own
control queue (:mod:`skyhop.enrolment`).

Data keys (:class:`~skyhop.crypto.kms.KMSKeyWrapper`): wrapped with KMS under the encryption
context ``{"skyhop:job": JOB}``; the wrapped form carries the key ARN and the
context, so a gateway unwraps with nothing but it. :meth:`launch` creates, for
each gateway role that receives a wrapped key (destinations), a KMS grant for
that role's IAM role (``grantee_roles``) allowing only ``Decrypt`` and only
with that job's encryption context; :meth:`revoke` retires it. Relays are
refused a key outright; roles with no grant and no IAM permission get
``AccessDenied`` from KMS.

Regions are plain AWS names (``us-east-1``) or the planner's ``aws:us-east-1``.
:meth:`revoke`, :meth:`terminate` and :meth:`list_gateways` look in the
regions this provider has used plus ``regions`` given to the constructor (a
fresh function instance must be told; the reaper passes every region it
deploys to) and the session's default region.

The provider lives in four modules: :mod:`~skyhop.compute.ec2.common` (tags,
ports, regions, clients), :mod:`~skyhop.compute.ec2.network` (network and
firewall), :mod:`~skyhop.compute.ec2.instances` (user data and instances) and
:mod:`~skyhop.compute.ec2.provider` (:class:`EC2ComputeProvider`, which puts
them together with the KMS grants of :mod:`skyhop.crypto.kms`).
"""

from skyhop.compute.ec2.common import (
    AMI_PARAMETER,
    CONFIG_PATH,
    CONTROL_PORT_TAG,
    DATA_PORT_TAG,
    DEFAULT_CONTROL_PORT,
    DEFAULT_DATA_PORT,
    DEFAULT_INSTANCE_TYPE,
    GATEWAY_ID_TAG,
    GATEWAY_TAG,
    JOB_TAG,
    MAX_USER_DATA,
    NETWORK_CIDR,
    NETWORK_TAG,
    ROLE_TAG,
    SECURITY_GROUP_NAME,
    SUBNET_CIDR,
    aws_region,
)
from skyhop.compute.ec2.instances import bootstrap_script, config_from_user_data
from skyhop.compute.ec2.network import Network
from skyhop.compute.ec2.provider import EC2ComputeProvider

__all__ = [
    "AMI_PARAMETER",
    "CONFIG_PATH",
    "CONTROL_PORT_TAG",
    "DATA_PORT_TAG",
    "DEFAULT_CONTROL_PORT",
    "DEFAULT_DATA_PORT",
    "DEFAULT_INSTANCE_TYPE",
    "GATEWAY_ID_TAG",
    "GATEWAY_TAG",
    "JOB_TAG",
    "MAX_USER_DATA",
    "NETWORK_CIDR",
    "NETWORK_TAG",
    "ROLE_TAG",
    "SECURITY_GROUP_NAME",
    "SUBNET_CIDR",
    "EC2ComputeProvider",
    "Network",
    "aws_region",
    "bootstrap_script",
    "config_from_user_data",
]
