"""Protocol test suites, run against every implementation (the rclone ``fstests`` idea).

Each suite is a class whose name does not start with ``Test`` (so it is not
collected on its own). An implementation's test module subclasses it and
supplies one fixture:

    from tests.suites.store_suite import StoreSuite

    class TestS3Store(StoreSuite):
        @pytest.fixture
        def store(self, moto):
            ...
            return S3Store(parse_uri("s3://bucket"))

- :class:`tests.suites.store_suite.StoreSuite` needs ``store`` (an empty bucket);
  optionally ``key_prefix`` (for stores whose keys are absolute, e.g. local)
  and the class attribute ``supports_metadata``.
- :class:`tests.suites.manifest_suite.ManifestSuite` needs ``manifest`` (empty).
- :class:`tests.suites.queue_suite.QueueSuite` needs ``queue`` (empty).

Optional features a store does not declare in its capabilities are skipped,
not failed.
"""
