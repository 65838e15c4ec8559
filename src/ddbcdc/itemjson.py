"""``ddbcdc.itemjson`` is :mod:`ddbcdc.decode.itemjson`: this import path is kept for users.

The package's own code imports :mod:`ddbcdc.decode.itemjson`.
"""

import sys

from ddbcdc.decode import itemjson as _module
from ddbcdc.decode.itemjson import *  # noqa: F403
from ddbcdc.decode.itemjson import __all__ as __all__

sys.modules[__name__] = _module
