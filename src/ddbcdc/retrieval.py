"""``ddbcdc.retrieval`` is :mod:`ddbcdc.aws.retrieval`: this import path is kept for users.

The package's own code imports :mod:`ddbcdc.aws.retrieval`.
"""

import sys

from ddbcdc.aws import retrieval as _module
from ddbcdc.aws.retrieval import *  # noqa: F403
from ddbcdc.aws.retrieval import __all__ as __all__

sys.modules[__name__] = _module
