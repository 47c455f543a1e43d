"""The skyhop data-plane daemon: one gateway (source, relay or destination) of a job.

Run as ``python -m gateway_vm --config PATH``. It imports ``skyhop``; ``skyhop``
never imports it.
"""
