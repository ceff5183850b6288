"""Batch jobs: a JSONL of requests in, output and error JSONL out (the OpenAI Batch API workflow).

`submit_batch` validates a file and sends its lines as `InvokeRequested` events tagged with the
batch id and custom_id; the invoke worker answers into a durable per-batch results queue, which
collection drains into the batch's files, each custom_id exactly once. `Batch` gives status,
results, cancel and wait; `ModelBus.batch(...)` is the same from the client.
"""

from producers.batch.handle import Batch, list_batches, submit_and_wait, submit_batch
from producers.batch.status import BatchStatus
from producers.batch.store import BatchRecord, BatchState, BatchStore, UnknownBatch
from producers.batch.submit import InvalidBatch, parse_window
from producers.batch.validate import LineError, ValidationReport, parse_endpoint, validate_file, validate_lines

__all__ = [
    "Batch",
    "BatchRecord",
    "BatchState",
    "BatchStatus",
    "BatchStore",
    "InvalidBatch",
    "LineError",
    "UnknownBatch",
    "ValidationReport",
    "list_batches",
    "parse_endpoint",
    "parse_window",
    "submit_and_wait",
    "submit_batch",
    "validate_file",
    "validate_lines",
]
