"""The local stack: everything ddbcdc needs on one machine, on loopback, with no AWS account.

- :mod:`ddbcdc.local.stack`: starts and stops the whole stack (``ddbcdc local``);
- :mod:`ddbcdc.local.moto`, :mod:`ddbcdc.local.kinesis`, :mod:`ddbcdc.local.postgres`: the
  emulators (moto's DynamoDB, kinesis-local) and a throwaway PostgreSQL;
- :mod:`ddbcdc.local.bridge` (with :mod:`~ddbcdc.local.bridge_table` and
  :mod:`~ddbcdc.local.bridge_format`): DynamoDB Streams -> Kinesis, what AWS's managed
  streaming destination does;
- :mod:`ddbcdc.local.supervisor`: the detached process behind ``ddbcdc local up``;
  :mod:`ddbcdc.local.processes`: child processes started, waited for and stopped;
  :mod:`ddbcdc.local.awsjson`: a small client of the AWS JSON APIs (the bridge's).
"""
