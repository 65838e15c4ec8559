"""Load: the traffic generator that drives the source table (``ddbcdc load``, the demo).

- :mod:`ddbcdc.load.plan`: options -> a reproducible stream of operations, and the table they
  should leave behind (pure);
- :mod:`ddbcdc.load.writer`: those operations against DynamoDB: pacing, batching, retries.
"""
