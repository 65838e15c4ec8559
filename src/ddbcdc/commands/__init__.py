"""The ``ddbcdc`` subcommands, one module each.

Each module defines ``register(subparsers)``, which adds its parser and sets ``func`` (taking
the parsed arguments and returning the exit code).
"""
