"""Fixtures of the RADHicaL tests: a generated slide and hand-set level classifiers."""

from __future__ import annotations

import pytest
from radhical_models import SPACINGS, darkness_model

from digipath.synthetic import nuclei_slide, write_nuclei_slide


@pytest.fixture(scope="session")
def darkness_models():
    """One hand-set model per level of :data:`SPACINGS`, finest first."""
    return [darkness_model(level) for level in range(len(SPACINGS))]


@pytest.fixture(scope="session")
def generated_slide(tmp_path_factory):
    """A 1536 x 1536 generated slide at 0.25 µm/px: (slide, image path, mask path)."""
    slide = nuclei_slide((1536, 1536), spacing=0.25, seed=5)
    folder = tmp_path_factory.mktemp("radhical_slide")
    image, mask = write_nuclei_slide(folder, "patient1_slide", slide)
    return slide, image, mask
