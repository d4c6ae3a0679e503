"""Fixtures of the data tests: small slides with label masks (see tests/batch_sources.py)."""

from __future__ import annotations

import pytest
from batch_sources import make_sources

from digipath.data.config import PatchSource


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, list[PatchSource]]:
    """``{category: sources}``: three tumour images (labels 0-2), two normal ones (0-1)."""
    return make_sources(tmp_path_factory.mktemp("generator"))
