"""Shared fixtures: the real test data in ../shared/data.

Tests find the data through ``DIGIPATH_TEST_DATA`` (default: ``../shared/data`` beside the
repository). When it is absent, tests that need it are skipped, unless
``DIGIPATH_REQUIRE_TEST_DATA=1`` (set by ``.ci/run``), in which case they fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent


def _data_root() -> Path:
    configured = os.environ.get("DIGIPATH_TEST_DATA")
    return Path(configured) if configured else REPOSITORY.parent / "shared" / "data"


def require_data(*parts: str) -> Path:
    """Return the test-data path ``parts`` (relative to the data root), or skip/fail."""
    path = _data_root().joinpath(*parts)
    if not path.exists():
        message = f"test data {path} not found (set DIGIPATH_TEST_DATA)"
        if os.environ.get("DIGIPATH_REQUIRE_TEST_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def test_data() -> Path:
    """Root folder of the real test data (``DIGIPATH_TEST_DATA``)."""
    return require_data()


@pytest.fixture(scope="session")
def wsi_files(test_data: Path) -> list[Path]:
    """Every whole-slide image in the test data's ``wsi`` folder."""
    files = sorted(p for p in (test_data / "wsi").rglob("*") if p.is_file())
    if not files:
        pytest.fail(f"no files under {test_data / 'wsi'}")
    return files


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """``{category: [PatchSource]}``: three tumour images (labels 0-2), two normal ones (0-1).

    Small generated slides with label masks (see ``tests/batch_sources.py``).
    """
    from batch_sources import make_sources

    return make_sources(tmp_path_factory.mktemp("slides"))
