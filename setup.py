"""Build hook for the optional C speedups; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        # optional: without a C compiler the install still succeeds, on the pure-Python path.
        Extension(
            "ddbcdc._speedups",
            ["src/ddbcdc/_speedups.c", "src/ddbcdc/_speedups_values.c"],
            depends=["src/ddbcdc/_speedups.h"],
            optional=True,
        ),
    ]
)
