"""The KCL worker: the shard processor (one process per shard), the daemon launcher, metrics.

- :mod:`ddbcdc.worker.processor`: amazon_kclpy v3 record processor; apply then checkpoint.
- :mod:`ddbcdc.worker.daemon`: render the KCL properties, check Java and jars, run the
  MultiLangDaemon and stop it gracefully.
- :mod:`ddbcdc.worker.metrics`: the Prometheus metrics each processor process writes.
- :mod:`ddbcdc.worker.serving`: those metrics merged, served on ``/metrics`` and ``/healthz``.
"""
