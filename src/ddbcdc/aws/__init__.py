"""AWS: clients, what their errors mean, and what ddbcdc asks of AWS.

- :mod:`ddbcdc.aws.clients`: boto3 clients built from the settings, one way for every part;
- :mod:`ddbcdc.aws.errors`: the errors those clients raise (service, operation, resource,
  endpoint), and every AWS error code ddbcdc reads, in one place;
- :mod:`ddbcdc.aws.provision`: ``ddbcdc setup`` / ``teardown``: the stream and the table
  (:mod:`ddbcdc.aws.resources`), and how the table's changes reach the stream
  (:mod:`ddbcdc.aws.wiring`: the managed destination, or the local bridge's tag);
- :mod:`ddbcdc.aws.throttle`: retrying AWS calls on the errors that say "try again", with
  their backoff, and the token bucket that paces them;
- :mod:`ddbcdc.aws.iam`: the least-privilege policy of each role;
- :mod:`ddbcdc.aws.retrieval`: how the worker reads its stream (retrieval mode, consumer,
  start position).
"""

from ddbcdc.aws.clients import client, endpoint_for
from ddbcdc.aws.errors import AwsError

__all__ = ["AwsError", "client", "endpoint_for"]
