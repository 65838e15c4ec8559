"""AWS: clients, and what ddbcdc asks of AWS.

- :mod:`ddbcdc.aws.clients`: boto3 clients built from the settings, one way for every part;
- :mod:`ddbcdc.aws.provision`: ``ddbcdc setup`` / ``teardown``: the stream and the table
  (:mod:`ddbcdc.aws.resources`), and how the table's changes reach the stream
  (:mod:`ddbcdc.aws.wiring`: the managed destination, or the local bridge's tag);
- :mod:`ddbcdc.aws.throttle`: which errors mean "try again", the backoff of AWS calls, the
  token bucket that paces them;
- :mod:`ddbcdc.aws.iam`: the least-privilege policy of each role;
- :mod:`ddbcdc.aws.retrieval`: how the worker reads its stream (retrieval mode, consumer,
  start position).
"""

from ddbcdc.aws.clients import client, endpoint_for

__all__ = ["client", "endpoint_for"]
