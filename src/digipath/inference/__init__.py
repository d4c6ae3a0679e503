"""Whole-slide inference: tile geometry from the model, tiled application, stitching."""

from digipath.inference.apply import ApplyResult, apply_network
from digipath.inference.geometry import TileGeometry, tile_geometry

__all__ = ["ApplyResult", "TileGeometry", "apply_network", "tile_geometry"]
