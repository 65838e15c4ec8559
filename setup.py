"""Build hook for the optional C speedups; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        # optional: without a C compiler the install still succeeds, on the pure-Python path.
        Extension(
            "ddbcdc.decode._speedups",
            ["src/ddbcdc/decode/_speedups.c", "src/ddbcdc/decode/_speedups_values.c"],
            depends=["src/ddbcdc/decode/_speedups.h"],
            optional=True,
        ),
    ]
)
