"""The local DynamoDB Streams front: moto's streams with shard lineage, for the LOCAL STACK ONLY.

moto serves the DynamoDB Streams API with one shard per stream that never closes, and
ignores ``ShardFilter``: shard rollover and child shards cannot happen there. The front
serves ``DescribeStream``, ``GetShardIterator``, ``GetRecords`` and ``ListStreams`` on a port
of its own, over moto's records, shaped as DynamoDB shapes them (see
:mod:`ddbcdc.local.lineage`): ``--shards`` shards per stream, split by key, and new
generations of shards on demand (``POST /rollover``, or every ``--rollover-every`` seconds),
children listed with their ``ParentShardId`` and found by ``ShardFilter: CHILD_SHARDS``, the
closed parents ending (``NextShardIterator`` absent) once read to their end.

Records are moto's, made DynamoDB's (:mod:`ddbcdc.local.front_stream`): each gets the
sequence number of its place in the lineage, and ``ApproximateCreationDateTime`` is rounded
down to the whole second (moto keeps milliseconds; DynamoDB Streams documents whole seconds).

Time to Live: moto never expires an item, so the front runs a
:class:`~ddbcdc.local.ttl.TtlSweeper` for the table of every stream moto lists
(:meth:`StreamsFront.expire_tables`, about once a second), which deletes expired items while
the table's TTL is ENABLED, and serves those REMOVEs with the TTL service's userIdentity in
the GetRecords API's form (:mod:`ddbcdc.local.ttl`).

In AWS this module has no job: DynamoDB does all of this itself.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import logging
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

from ddbcdc.local.awsjson import AwsApiError, JsonApiClient
from ddbcdc.local.front_stream import FrontError, FrontStream, now_ms
from ddbcdc.local.ttl import TtlSweepers

__all__ = ["StreamsFront", "main"]

log = logging.getLogger(__name__)

_CONTENT_TYPE = "application/x-amz-json-1.0"
_TARGET = "DynamoDBStreams_20120810."
_SCAN_LIMIT = 20_000  # positions one GetRecords looks at, at most
_DISCOVER_EVERY_S = 1.0  # between looks for streams whose tables need a TTL sweeper


class StreamsFront:
    """The DynamoDB Streams API over moto's streams, with lineage.

    Args:
        moto_endpoint: moto's URL.
        region: the region to sign moto calls for.
        shards: shards per stream in its first generation.
        ttl_interval: seconds between sweeps for expired items of a table with TTL enabled.
    """

    def __init__(
        self,
        moto_endpoint: str,
        *,
        region: str = "us-east-1",
        shards: int = 2,
        ttl_interval: float = 1.0,
    ) -> None:
        self.moto_endpoint = moto_endpoint
        self.region = region
        self.shards = shards
        self.ttl = TtlSweepers(endpoint=moto_endpoint, region=region, interval=ttl_interval)
        self._streams: dict[str, FrontStream] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._clients: list[JsonApiClient] = []

    def _client(self) -> JsonApiClient:
        client = JsonApiClient("dynamodbstreams", self.moto_endpoint, region=self.region)
        with self._lock:
            self._clients.append(client)
        return client

    def _moto(self) -> JsonApiClient:
        client: JsonApiClient | None = getattr(self._local, "moto", None)
        if client is None:
            client = self._local.moto = self._client()
        return client

    def close(self) -> None:
        """Stop the TTL sweepers and close every connection to moto."""
        self.ttl.stop()
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    def stream(self, arn: str) -> FrontStream:
        """The stream ``arn`` (known to moto), starting its lineage on first use."""
        with self._lock:
            found = self._streams.get(arn)
        if found is None:
            self._moto().call("DescribeStream", {"StreamArn": arn})  # raises if moto has none
            moto = self._client()
            with self._lock:
                found = self._streams.setdefault(
                    arn, FrontStream(arn, moto, self.shards, self.ttl.expiries)
                )
        return found

    def expire_tables(self) -> None:
        """Run a TTL sweeper for the table of every stream moto lists (each expires items
        only while its table's TTL is ENABLED)."""
        tables: set[str] = set()
        request: dict[str, Any] = {}
        while True:
            answer = self._moto().call("ListStreams", request)
            tables.update(str(s["TableName"]) for s in answer.get("Streams", []))
            if not answer.get("LastEvaluatedStreamArn"):
                break
            request["ExclusiveStartStreamArn"] = answer["LastEvaluatedStreamArn"]
        self.ttl.ensure(sorted(tables))

    def rollover(self, arn: str | None = None, *, split: bool = False) -> list[str]:
        """Close every open shard of ``arn`` (every stream when None) at the records so far
        and open their children; the new shard ids."""
        if arn is not None:
            streams = [self.stream(arn)]
        else:
            listed = self._moto().call("ListStreams", {}).get("Streams", [])
            streams = [self.stream(str(s["StreamArn"])) for s in listed]
        created: list[str] = []
        for stream in streams:
            with stream.lock:
                stream.pull(force=True)
                generation = stream.lineage.roll(
                    len(stream.records), created_ms=now_ms(), split=split
                )
                created += generation.shard_ids
            log.info("rolled %s over at record %d: %s", stream.arn, generation.start, created)
        return created

    # -- the API ----------------------------------------------------------------------------

    def call(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        """Answer one DynamoDB Streams call."""
        handler = {
            "ListStreams": self.list_streams,
            "DescribeStream": self.describe_stream,
            "GetShardIterator": self.get_shard_iterator,
            "GetRecords": self.get_records,
        }.get(operation)
        if handler is None:
            raise FrontError("UnknownOperationException", f"{operation} is not served here")
        answer: dict[str, Any] = handler(body)
        return answer

    def list_streams(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._moto().call("ListStreams", body)

    def describe_stream(self, body: dict[str, Any]) -> dict[str, Any]:
        arn = str(body.get("StreamArn", ""))
        description = dict(
            self._moto().call("DescribeStream", {"StreamArn": arn})["StreamDescription"]
        )
        stream = self.stream(arn)
        with stream.lock:
            shards = stream.lineage.describe()
            wanted = body.get("ShardFilter") or {}
            if wanted.get("Type") == "CHILD_SHARDS":
                children = set(stream.lineage.children(str(wanted.get("ShardId", ""))))
                shards = [s for s in shards if s["ShardId"] in children]
        start = body.get("ExclusiveStartShardId")
        if start:
            ids = [s["ShardId"] for s in shards]
            shards = shards[ids.index(start) + 1 :] if start in ids else shards
        limit = int(body.get("Limit") or 100)
        description["Shards"] = shards[:limit]
        description.pop("LastEvaluatedShardId", None)
        if len(shards) > limit:
            description["LastEvaluatedShardId"] = shards[limit - 1]["ShardId"]
        return {"StreamDescription": description}

    def get_shard_iterator(self, body: dict[str, Any]) -> dict[str, Any]:
        arn, shard_id = str(body.get("StreamArn", "")), str(body.get("ShardId", ""))
        kind = body.get("ShardIteratorType")
        stream = self.stream(arn)
        with stream.lock:
            stream.pull(force=True)
            generation, _ = stream.locate(shard_id)
            end = generation.end if generation.end is not None else len(stream.records)
            if kind == "TRIM_HORIZON":
                position = generation.start
            elif kind == "LATEST":
                position = end
            elif kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
                at = generation.position(str(body.get("SequenceNumber", "")))
                if at is None or not generation.start <= at <= end:
                    raise FrontError(
                        "ValidationException",
                        f"sequence number {body.get('SequenceNumber')} is not in {shard_id}",
                    )
                position = at + (kind == "AFTER_SEQUENCE_NUMBER")
            else:
                raise FrontError("ValidationException", f"ShardIteratorType {kind!r}")
        return {"ShardIterator": _iterator(arn, shard_id, position)}

    def get_records(self, body: dict[str, Any]) -> dict[str, Any]:
        arn, shard_id, position = _read_iterator(body.get("ShardIterator"))
        limit = min(int(body.get("Limit") or 1000), 1000)
        stream = self.stream(arn)
        with stream.lock:
            stream.pull()
            generation, index = stream.locate(shard_id)
            end = generation.end if generation.end is not None else len(stream.records)
            hashes, modulus = stream.hashes, generation.modulus
            found: list[dict[str, Any]] = []
            scan_end = min(end, position + _SCAN_LIMIT)
            while position < scan_end and len(found) < limit:
                if hashes[position] % modulus == index:
                    found.append(stream.shown(generation, position))
                position += 1
            answer: dict[str, Any] = {"Records": found}
            if generation.end is None or position < generation.end:
                answer["NextShardIterator"] = _iterator(arn, shard_id, position)
        return answer


def _iterator(arn: str, shard_id: str, position: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([arn, shard_id, position])).decode()


def _read_iterator(value: Any) -> tuple[str, str, int]:
    try:
        arn, shard_id, position = orjson.loads(base64.urlsafe_b64decode(str(value)))
        return str(arn), str(shard_id), int(position)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise FrontError("ValidationException", "invalid ShardIterator") from exc


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    front: StreamsFront

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            request = orjson.loads(body) if body else {}
            if self.path.startswith("/rollover"):
                created = self.front.rollover(
                    request.get("StreamArn"), split=bool(request.get("Split"))
                )
                self._send(200, {"Shards": created})
                return
            target = self.headers.get("X-Amz-Target", "")
            if not target.startswith(_TARGET):
                raise FrontError("UnknownOperationException", f"X-Amz-Target {target!r}")
            self._send(200, self.front.call(target[len(_TARGET) :], request))
        except FrontError as exc:
            self._send(
                exc.status,
                {"__type": f"com.amazonaws.dynamodb.v20120810#{exc.code}", "message": exc.message},
            )
        except AwsApiError as exc:  # moto's answer, passed on
            status = exc.status if exc.status >= 400 else 500
            self._send(
                status,
                {"__type": f"com.amazonaws.dynamodb.v20120810#{exc.code}", "message": str(exc)},
            )
        except Exception as exc:  # the server boundary: answer, never die
            log.exception("front: %s", type(exc).__name__)
            self._send(500, {"__type": "InternalServerError", "message": type(exc).__name__})

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = orjson.dumps(payload)
        self.send_response(status)
        self.send_header("Content-Type", _CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", "ddbcdc-local-front")
        self.end_headers()
        self.wfile.write(data)


def serve(front: StreamsFront, port: int = 0) -> ThreadingHTTPServer:
    """A server for ``front`` on 127.0.0.1:``port`` (0: a free one), not yet serving."""
    handler = type("Handler", (_Handler,), {"front": front})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    return server


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ddbcdc.local.streams_front",
        description="Local stack only: moto's DynamoDB Streams with shard lineage.",
    )
    parser.add_argument("--moto-endpoint", required=True)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--shards", type=int, default=2, help="shards per stream at first (2)")
    parser.add_argument(
        "--rollover-every", type=float, default=0.0, help="seconds between rollovers (0: never)"
    )
    parser.add_argument(
        "--ttl-interval",
        type=float,
        default=1.0,
        help="seconds between sweeps for expired items of tables with TTL enabled",
    )
    parser.add_argument("--ready-file", type=Path, help="written with the URL once serving")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT."""
    import signal

    args = _parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    front = StreamsFront(
        args.moto_endpoint, region=args.region, shards=args.shards, ttl_interval=args.ttl_interval
    )
    server = serve(front, args.port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, name="front", daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    log.info("DynamoDB Streams front on %s over moto %s", url, args.moto_endpoint)
    if args.ready_file is not None:
        args.ready_file.write_text(url + "\n")
    rollover_due = time.monotonic() + args.rollover_every
    while not stop.wait(_DISCOVER_EVERY_S):
        try:
            front.expire_tables()
        except AwsApiError as exc:
            log.warning("listing the streams whose tables expire items: %s", exc)
        if args.rollover_every and time.monotonic() >= rollover_due:
            rollover_due = time.monotonic() + args.rollover_every
            front.rollover()
    server.shutdown()
    server.server_close()
    front.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
