"""``python -m digipath``: the same as the ``digipath`` command."""

from digipath.cli.main import app

app()
