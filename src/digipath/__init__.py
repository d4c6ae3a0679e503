"""digipath."""
