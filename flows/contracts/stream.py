"""The price stream's lake schemas: a tick file (the contract's columns plus where each tick came from) and the
gap file a lost connection leaves. In the contracts layer, so the warehouse, Terraform and the integrity check read
them without importing the stream (which pulls in Prefect and websockets)."""

from __future__ import annotations

import pyarrow as pa

from flows.contracts.columns import TIMESTAMP_TYPE
from flows.contracts.datasets import PRICES_STREAM

DATASET = PRICES_STREAM.dataset
GAPS_DATASET = "prices_stream_gaps"

TICK_SCHEMA = pa.schema(
    [
        *(
            pa.field(c.name, c.arrow_type, nullable=not c.required, metadata={"description": c.description})
            for c in PRICES_STREAM.columns
        ),
        pa.field("tick_ts", TIMESTAMP_TYPE, nullable=False, metadata={"description": "Receive time (UTC, us)"}),
        pa.field(
            "message_seq", pa.int64(), nullable=False, metadata={"description": "Message number on its connection"}
        ),
        pa.field("connection_id", pa.string(), nullable=False, metadata={"description": "<stream id>-c<n>"}),
        pa.field("batch_id", pa.string(), nullable=False, metadata={"description": "The micro-batch file"}),
    ],
    metadata={"dataset": DATASET},
)
GAP_SCHEMA = pa.schema(
    [
        pa.field("connection_id", pa.string(), nullable=False),  # the connection that was lost
        pa.field("last_message_seq", pa.int64(), nullable=False),  # its last message received (0: none)
        pa.field("disconnected_at", TIMESTAMP_TYPE, nullable=False),
        pa.field("reconnected_at", TIMESTAMP_TYPE),  # null when the stream stopped before reconnecting
        pa.field("next_connection_id", pa.string()),
        pa.field("seconds", pa.float64()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("failed_attempts", pa.int64(), nullable=False),  # reconnect attempts that failed in between
    ],
    metadata={"dataset": GAPS_DATASET},
)
