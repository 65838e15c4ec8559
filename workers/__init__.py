"""The KCL MultiLangDaemon's files, installed with the package as ``ddbcdc._workers``.

``ddbcdc worker`` finds them through :func:`ddbcdc.resources.workers_file`; the daemon runs
the shard processor as ``python -P -m ddbcdc.worker.entry`` (``record_processor.py`` is the
same entry point for a checkout).
"""
