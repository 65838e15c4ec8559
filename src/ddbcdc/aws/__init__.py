"""AWS: clients, what their errors mean, and what ddbcdc asks of AWS.

- :mod:`ddbcdc.aws.clients`: boto3 clients built from the settings, one way for every part;
- :mod:`ddbcdc.aws.errors`: the errors those clients raise (service, operation, resource,
  endpoint), and the one list of AWS error codes that mean "slow down" or "try again";
- :mod:`ddbcdc.aws.provision`: the stream, the table and its streaming destination
  (``ddbcdc setup`` / ``teardown``);
- :mod:`ddbcdc.aws.iam`: the least-privilege policy of each role;
- :mod:`ddbcdc.aws.retrieval`: how the worker reads its stream (retrieval mode, consumer,
  start position).
"""

from ddbcdc.aws.clients import client, endpoint_for
from ddbcdc.aws.errors import AwsError

__all__ = ["AwsError", "client", "endpoint_for"]
