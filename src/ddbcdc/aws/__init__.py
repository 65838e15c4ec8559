"""AWS: clients, and what ddbcdc asks of AWS.

- :mod:`ddbcdc.aws.clients`: boto3 clients built from the settings, one way for every part;
- :mod:`ddbcdc.aws.provision`: the stream, the table and its streaming destination
  (``ddbcdc setup`` / ``teardown``);
- :mod:`ddbcdc.aws.iam`: the least-privilege policy of each role;
- :mod:`ddbcdc.aws.retrieval`: how the worker reads its stream (retrieval mode, consumer,
  start position).
"""

from ddbcdc.aws.clients import client, endpoint_for

__all__ = ["client", "endpoint_for"]
