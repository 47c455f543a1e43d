"""The skyhop CDK app: the serverless control plane and account-wide replication rules.

Entry point: ``infra_cdk/app.py`` (see ``infra_cdk/README.md``).
"""
