"""Every real slide of the test data goes through apply_network end to end."""

from __future__ import annotations

import numpy as np
import torch

from digipath.inference import apply_network
from digipath.io import ImageReader
from digipath.models import model_class


def test_every_real_slide_goes_through(wsi_files, tmp_path):
    done = []
    for path in wsi_files:
        reader = ImageReader(path)
        if reader.spacings[0] is None:  # the TCGA slide states none: assume 40x
            reader.close()
            reader = ImageReader(path, spacing=0.25)
        with reader:
            # the coarsest level still at least 64 px on its short side, or level 0
            levels = [i for i, shape in enumerate(reader.shapes) if min(shape) >= 64] or [0]
            spacing = reader.spacings[levels[-1]]
            torch.manual_seed(0)
            model = model_class("unet")(classes=2, input_channels=reader.channels, depth=1,
                                        branching_factor=1, padding="same").build()  # fmt: skip
            output = tmp_path / f"{path.stem}.tif"
            result = apply_network(model, reader, output, spacing=spacing, tile_size=128)
            with ImageReader(output) as written:
                assert written.shapes[0] == reader.shape(spacing)
                assert written.spacings[0] is not None
                labels = written.read(written.spacings[0], 0, 0, *written.shapes[0])
            assert set(np.unique(labels)) <= {1, 2} and result.computed == result.tiles
        done.append(path.name)
    assert len(done) == len(wsi_files) >= 5
