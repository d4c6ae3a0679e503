"""RADHicaL: resolution-adaptive hierarchical inference (one cheap classifier per magnification)."""
