"""The digipath web application: accounts, projects, datasets, model weights, jobs and pages.

Started with ``digipath serve``; :func:`~digipath.server.app.create_app` builds the FastAPI
application from :class:`~digipath.server.settings.ServerSettings`. The layout:

``settings``     the configuration (data folder, database URL, limits, job runner)
``db``           engine, sessions and migrations (alembic, in ``migrations/``)
``models``       the tables (SQLAlchemy)
``security``     password hashes (argon2), session and API tokens, CSRF, login rate limits
``deps``         request dependencies: the database session, the current user, access checks
``uploads``      safe handling of uploaded zips, YAML, images and model files
``properties``   hyper-parameter properties, allowed values and their resolution
``api/``         the JSON REST API under ``/api/v1`` (one module per resource)
``jobs``         what a job does (train, inference, single image, whole-slide apply)
``runner``       the job runner: worker processes or a Dask cluster, statuses, restarts
``pages``        the server-rendered pages (Jinja2 templates in ``templates/``)
``viewer``       Deep Zoom tiles of slides and output maps for the OpenSeadragon viewer

Everything a page does goes through the API, so a script can do it too (with an API token).
"""

from digipath.server.settings import ServerSettings

__all__ = ["ServerSettings"]
