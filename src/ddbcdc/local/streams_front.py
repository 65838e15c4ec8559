"""The local DynamoDB Streams front: moto's streams with shard lineage, for the LOCAL STACK ONLY.

moto serves the DynamoDB Streams API with one shard per stream that never closes, and
ignores ``ShardFilter``: shard rollover and child shards cannot happen there. The front
serves ``DescribeStream``, ``GetShardIterator``, ``GetRecords`` and ``ListStreams`` on a port
of its own, over moto's records, shaped as DynamoDB shapes them (see
:mod:`ddbcdc.local.lineage`): ``--shards`` shards per stream, split by key, and new
generations of shards on demand (``POST /rollover``, or every ``--rollover-every`` seconds),
children listed with their ``ParentShardId`` and found by ``ShardFilter: CHILD_SHARDS``, the
closed parents ending (``NextShardIterator`` absent) once read to their end.

Records are moto's, with two changes that make them DynamoDB's: each gets the sequence
number of its place in the lineage, and ``ApproximateCreationDateTime`` is rounded down to
the whole second (moto keeps milliseconds; DynamoDB Streams documents whole seconds).

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
from ddbcdc.local.lineage import Generation, Lineage, key_hash

__all__ = ["StreamsFront", "main"]

log = logging.getLogger(__name__)

_CONTENT_TYPE = "application/x-amz-json-1.0"
_TARGET = "DynamoDBStreams_20120810."
_PULL_EVERY_S = 0.05
_SCAN_LIMIT = 20_000  # positions one GetRecords looks at, at most


class _Error(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Stream:
    """One stream: moto's records so far and the lineage they are shown in."""

    def __init__(self, arn: str, moto: JsonApiClient, shards: int) -> None:
        self.arn = arn
        self.lock = threading.Lock()
        self.records: list[dict[str, Any]] = []
        self.hashes: list[int] = []
        self.lineage = Lineage(arn, shards, _now_ms())
        self._moto = moto
        self._iterator: str | None = None
        self._pulled = 0.0

    def pull(self, *, force: bool = False) -> None:
        """Append the records moto has that are not here yet (call with the lock held)."""
        if not force and time.monotonic() - self._pulled < _PULL_EVERY_S:
            return
        if self._iterator is None:
            description = self._moto.call("DescribeStream", {"StreamArn": self.arn})
            shard = description["StreamDescription"]["Shards"][0]["ShardId"]
            self._iterator = self._moto.call(
                "GetShardIterator",
                {"StreamArn": self.arn, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"},
            )["ShardIterator"]
        while True:
            answer = self._moto.call("GetRecords", {"ShardIterator": self._iterator, "Limit": 1000})
            self._iterator = answer.get("NextShardIterator") or self._iterator
            got = answer.get("Records", [])
            for record in got:
                self.hashes.append(key_hash(record["dynamodb"]["Keys"]))
                self.records.append(record)
            if len(got) < 1000:
                break
        self._pulled = time.monotonic()

    def locate(self, shard_id: str) -> tuple[Generation, int]:
        found = self.lineage.find(shard_id)
        if found is None:
            raise _Error("ResourceNotFoundException", f"shard {shard_id} not found in {self.arn}")
        return found

    def shown(self, generation: Generation, position: int) -> dict[str, Any]:
        """The record at ``position`` as DynamoDB Streams shows it in ``generation``."""
        record = self.records[position]
        dynamodb = dict(record["dynamodb"])
        dynamodb["SequenceNumber"] = generation.sequence(position)
        created = dynamodb.get("ApproximateCreationDateTime")
        if isinstance(created, int | float):
            dynamodb["ApproximateCreationDateTime"] = int(created)
        return {**record, "dynamodb": dynamodb}


class StreamsFront:
    """The DynamoDB Streams API over moto's streams, with lineage.

    Args:
        moto_endpoint: moto's URL.
        region: the region to sign moto calls for.
        shards: shards per stream in its first generation.
    """

    def __init__(self, moto_endpoint: str, *, region: str = "us-east-1", shards: int = 2) -> None:
        self.moto_endpoint = moto_endpoint
        self.region = region
        self.shards = shards
        self._streams: dict[str, _Stream] = {}
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
        """Close every connection to moto."""
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    def stream(self, arn: str) -> _Stream:
        """The stream ``arn`` (known to moto), starting its lineage on first use."""
        with self._lock:
            found = self._streams.get(arn)
        if found is None:
            self._moto().call("DescribeStream", {"StreamArn": arn})  # raises if moto has none
            moto = self._client()
            with self._lock:
                found = self._streams.setdefault(arn, _Stream(arn, moto, self.shards))
        return found

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
                    len(stream.records), created_ms=_now_ms(), split=split
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
            raise _Error("UnknownOperationException", f"{operation} is not served here")
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
                    raise _Error(
                        "ValidationException",
                        f"sequence number {body.get('SequenceNumber')} is not in {shard_id}",
                    )
                position = at + (kind == "AFTER_SEQUENCE_NUMBER")
            else:
                raise _Error("ValidationException", f"ShardIteratorType {kind!r}")
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
        raise _Error("ValidationException", "invalid ShardIterator") from exc


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
                raise _Error("UnknownOperationException", f"X-Amz-Target {target!r}")
            self._send(200, self.front.call(target[len(_TARGET) :], request))
        except _Error as exc:
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
    front = StreamsFront(args.moto_endpoint, region=args.region, shards=args.shards)
    server = serve(front, args.port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, name="front", daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    log.info("DynamoDB Streams front on %s over moto %s", url, args.moto_endpoint)
    if args.ready_file is not None:
        args.ready_file.write_text(url + "\n")
    while not stop.wait(args.rollover_every or 3600.0):
        if args.rollover_every:
            front.rollover()
    server.shutdown()
    server.server_close()
    front.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
