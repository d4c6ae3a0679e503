"""The ``digipath`` command line: one module per command group, thin over the Python API."""
