"""The local stack: everything ddbcdc needs on one machine, on loopback, with no AWS account."""
