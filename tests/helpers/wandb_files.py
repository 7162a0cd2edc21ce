"""Read an offline W&B run's `run-<id>.wandb` file: the records the W&B service would upload.

The file is W&B's LevelDB-style log (wandb's Go core writes it; the Python reader that older wandb releases
shipped is gone): a 7-byte header (`:W&B`, magic 0xBEE1, version), then 32 KiB blocks of chunks, each
`crc32 (4) | length (2, little-endian) | type (1: full, 2: first, 3: middle, 4: last)` + payload; a record
split across blocks is its chunks' payloads joined. Each record is a `wandb_internal_pb2.Record` protobuf.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK, HEADER = 32 * 1024, 7


def records(path: Path) -> list[Any]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    out, parts, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # a block's tail too short for a chunk header is zero padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        payload, pos = data[pos + HEADER : pos + HEADER + length], pos + HEADER + length
        if kind in (1, 2):
            parts = payload
        elif kind in (3, 4):
            parts += payload
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            out.append(record)
    return out


def finished_records(path: Path, timeout: float = 60.0) -> list[Any]:
    """The run's records once W&B's service has written its `exit` record: `wandb.finish()` returns before
    the service's writer has flushed everything to the file."""
    deadline = time.monotonic() + timeout
    while True:
        found = records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def summary(path: Path) -> dict[str, Any]:
    """What a test checks: the run's name, id, group, tags, its config (merged) and history rows."""
    run, config, history = None, {}, []
    for r in finished_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run = r.run
            config.update({c.key: json.loads(c.value_json) for c in r.run.config.update})
        elif kind == "config":
            config.update({c.key: json.loads(c.value_json) for c in r.config.update})
        elif kind == "history":
            history.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item})
    assert run is not None, f"{path} has no run record"
    return {"name": run.display_name, "id": run.run_id, "group": run.run_group, "tags": list(run.tags),
            "config": config, "history": history}
