"""LocalStore against the shared ObjectStore suite (keys under a fresh temporary directory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyhop.uri import parse_uri
from tests.suites.store_suite import StoreSuite

local = pytest.importorskip(
    "skyhop.stores.local", reason="skyhop.stores.local (LocalStore) is not importable yet"
)


class TestLocalStoreSuite(StoreSuite):
    @pytest.fixture
    def key_prefix(self, tmp_path: Path) -> str:
        root = tmp_path / "bucket"
        root.mkdir()
        return str(root).lstrip("/") + "/"

    @pytest.fixture
    def store(self, key_prefix: str):
        return local.LocalStore(parse_uri("/"))
