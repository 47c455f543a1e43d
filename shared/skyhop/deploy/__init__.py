"""``skyhop deploy``: the serverless control plane on a cloud's functions service.

* :mod:`skyhop.deploy.package` builds the source archive (no cloud SDK);
* :mod:`skyhop.deploy.gcp` deploys it as Cloud Functions (google-cloud-functions);
* :mod:`skyhop.deploy.azure` as an Azure Function App (azure-mgmt-web, zip deploy);
* :mod:`skyhop.deploy.cli` adds the ``deploy`` subcommand.

AWS is deployed by ``infra_cdk`` (``cdk deploy``).
"""
