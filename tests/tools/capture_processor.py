"""A kclpy record processor that appends each record it gets to ``$CAPTURE_FILE`` (JSONL).

Used by ``capture_adapter_records.py``; it checkpoints after each batch.
"""

import json
import os

from amazon_kclpy import kcl
from amazon_kclpy.v3 import processor


class CaptureProcessor(processor.RecordProcessorBase):  # type: ignore[misc]
    def initialize(self, initialize_input):  # type: ignore[no-untyped-def]
        self.shard = initialize_input.shard_id

    def process_records(self, process_records_input):  # type: ignore[no-untyped-def]
        records = process_records_input.records
        with open(os.environ["CAPTURE_FILE"], "a") as out:
            for r in records:
                line = {
                    "shard": self.shard,
                    "sequenceNumber": r.sequence_number,
                    "partitionKey": r.partition_key,
                    "subSequenceNumber": r.sub_sequence_number,
                    "approximateArrivalTimestamp": str(r.approximate_arrival_timestamp),
                    "data": r.binary_data.decode(),
                }
                out.write(json.dumps(line) + "\n")
        if records:
            process_records_input.checkpointer.checkpoint(records[-1].sequence_number)

    def lease_lost(self, lease_lost_input):  # type: ignore[no-untyped-def]
        pass

    def shard_ended(self, shard_ended_input):  # type: ignore[no-untyped-def]
        shard_ended_input.checkpointer.checkpoint()

    def shutdown_requested(self, shutdown_requested_input):  # type: ignore[no-untyped-def]
        pass


if __name__ == "__main__":
    kcl.KCLProcess(CaptureProcessor()).run()
