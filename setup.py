"""Build the optional C extension; everything else is configured in pyproject.toml.

``digipath.io._jpegregion`` decodes only the part of a JPEG tile that a region needs, with
libjpeg-turbo (Debian: libjpeg62-turbo-dev). It is optional: when the headers or a compiler are
missing the build goes on without it and digipath decodes whole tiles with imagecodecs.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "digipath.io._jpegregion",
            sources=["src/digipath/io/_jpegregion.c"],
            libraries=["jpeg"],
            extra_compile_args=["-O2", "-Wall"],
            optional=True,
        )
    ]
)
