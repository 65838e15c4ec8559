"""``ddbcdc.attributes`` is :mod:`ddbcdc.decode.attributes`: this import path is kept for users.

The package's own code imports :mod:`ddbcdc.decode.attributes`.
"""

import sys

from ddbcdc.decode import attributes as _module
from ddbcdc.decode.attributes import *  # noqa: F403
from ddbcdc.decode.attributes import __all__ as __all__

sys.modules[__name__] = _module
