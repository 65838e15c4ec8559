"""``ddbcdc iam-policy``: print the least-privilege IAM policy of a role, as JSON.

The policy is scoped to the configured ARNs: region (``AWS_REGION``), account (``--account``,
``DDBCDC_AWS_ACCOUNT_ID``, or the account in the stream's or consumer's ARN), Kinesis stream,
source table and KCL application (its lease, worker-metrics and coordinator-state tables).
The worker's Kinesis statements follow the retrieval mode (FANOUT or POLLING) and consumer
settings; CloudWatch appears when ``DDBCDC_KCL_METRICS_LEVEL`` is not NONE. What the policy
was scoped to is summarized on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from ddbcdc.commands import table_name

if TYPE_CHECKING:
    from ddbcdc.aws.iam import PolicyTarget, Role
    from ddbcdc.settings import Settings

__all__ = ["register", "run", "target_from"]

_FOR = ("worker", "setup", "snapshot", "all")


def register(subparsers: Any) -> None:
    """Add the ``iam-policy`` subcommand."""
    parser = subparsers.add_parser(
        "iam-policy",
        help="print the least-privilege IAM policy of the worker, setup or snapshot role",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--for",
        dest="role",
        choices=_FOR,
        default="worker",
        help="which role (default: worker); all: one policy with every role's statements",
    )
    parser.add_argument("--account", help="12-digit AWS account id of the resources")
    parser.add_argument(
        "--stream",
        help="Kinesis stream name or ARN; with DDBCDC_SOURCE=dynamodb-streams a DynamoDB stream "
        "ARN (default: from settings; else every stream of the table)",
    )
    parser.add_argument(
        "--table", type=table_name, help="source DynamoDB table (default: settings.source_table)"
    )
    parser.add_argument("--application-name", help="KCL application name (default: settings)")
    parser.add_argument(
        "--retrieval-mode",
        type=str.upper,
        choices=("FANOUT", "POLLING"),
        help="the worker's retrieval mode (default: as the worker would choose it)",
    )
    parser.add_argument("--export-bucket", help="snapshot role: S3 bucket of table exports")
    parser.add_argument("--export-prefix", default="", help="snapshot role: key prefix in it")
    parser.set_defaults(func=run)


def _arn_parts(arn: str, what: str) -> tuple[str, str, str]:
    """(region, account, resource) of an ARN."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or not parts[5]:
        from ddbcdc.errors import ConfigurationError

        raise ConfigurationError(f"{what} {arn!r} is not an ARN")
    return parts[3], parts[4], parts[5]


def _account(args: argparse.Namespace, settings: Settings, stream_arn: str | None) -> str:
    from ddbcdc.errors import ConfigurationError

    found = {
        source: _arn_parts(arn, source)[1]
        for source, arn in (("stream ARN", stream_arn), ("consumer ARN", settings.consumer_arn))
        if arn
    }
    chosen = args.account or settings.account_id
    if chosen is None and found:
        chosen = next(iter(found.values()))
    if chosen is None:
        raise ConfigurationError(
            "no AWS account id: pass --account or set DDBCDC_AWS_ACCOUNT_ID (or give the stream "
            "as an ARN)"
        )
    for source, account in found.items():
        if account != chosen:
            raise ConfigurationError(f"the {source} is in account {account}, not {chosen}")
    return str(chosen)


def target_from(args: argparse.Namespace, settings: Settings) -> PolicyTarget:
    """The policy's scope from the command line, falling back to settings."""
    from ddbcdc.aws.iam import PolicyTarget
    from ddbcdc.aws.retrieval import check_consumer, retrieval_mode
    from ddbcdc.errors import ConfigurationError

    if settings.source == "dynamodb-streams":
        return _dynamodb_stream_target(args, settings)
    stream = args.stream or settings.stream_arn or settings.stream_name
    if not stream:
        raise ConfigurationError(
            "no Kinesis stream: pass --stream or set DDBCDC_STREAM_NAME (or DDBCDC_STREAM_ARN)"
        )
    stream_arn = stream if stream.startswith("arn:") else None
    region = settings.aws_region
    if stream_arn:
        region, _, resource = _arn_parts(stream_arn, "stream ARN")
        stream = resource.removeprefix("stream/")
    mode = args.retrieval_mode or retrieval_mode(settings)
    check_consumer(settings, mode)
    return PolicyTarget(
        region=region,
        account=_account(args, settings, stream_arn),
        stream=stream,
        table=args.table or settings.source_table,
        application=args.application_name or settings.application_name,
        retrieval_mode=mode,
        consumer_name=settings.consumer_name,
        consumer_arn=settings.consumer_arn,
        kcl_metrics=settings.kcl_metrics_level != "NONE",
        export_bucket=args.export_bucket,
        export_prefix=args.export_prefix,
    )


def _dynamodb_stream_target(args: argparse.Namespace, settings: Settings) -> PolicyTarget:
    """The scope with DDBCDC_SOURCE=dynamodb-streams: the table (from a stream ARN if one
    is given) and all of its streams; no AWS call."""
    from ddbcdc.aws.iam import PolicyTarget

    stream_arn = args.stream or settings.stream_arn
    table = args.table or settings.source_table
    region = settings.aws_region
    if stream_arn:
        region, _, resource = _arn_parts(stream_arn, "stream ARN")
        table = resource.split("/")[1] if resource.startswith("table/") else table
    return PolicyTarget(
        region=region,
        account=_account(args, settings, stream_arn),
        stream="",
        table=table,
        application=args.application_name or settings.application_name,
        retrieval_mode="POLLING",
        kcl_metrics=settings.kcl_metrics_level != "NONE",
        export_bucket=args.export_bucket,
        export_prefix=args.export_prefix,
        source="dynamodb-streams",
    )


def run(args: argparse.Namespace) -> int:
    """Print the policy document on stdout and what it is scoped to on stderr."""
    from ddbcdc.aws.iam import ROLES, policy_document
    from ddbcdc.settings import Settings

    target = target_from(args, Settings())
    roles: tuple[Role, ...] = ROLES if args.role == "all" else (args.role,)
    print(json.dumps(policy_document(target, roles), indent=2))
    stream = target.stream if target.source == "kinesis" else target.table_streams_arn
    notes = [
        f"region {target.region}",
        f"account {target.account}",
        f"source {target.source}",
        f"stream {stream}",
        f"table {target.table}",
        f"application {target.application}",
        f"retrieval {target.retrieval_mode}",
        f"KCL CloudWatch metrics {'on' if target.kcl_metrics else 'off'}",
    ]
    print(f"ddbcdc iam-policy: {args.role} role; " + ", ".join(notes), file=sys.stderr)
    if "snapshot" in roles and target.export_bucket is None:
        print(
            "ddbcdc iam-policy: no --export-bucket: the snapshot role has no export or S3 "
            "statements",
            file=sys.stderr,
        )
    return 0
