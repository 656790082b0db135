"""Reading W&B's offline files (`run.dir/wandb/offline-run-*/run-<id>.wandb`) back: the run ids and history rows
they hold, so the tests check what W&B would upload."""

from pathlib import Path


def records(path: Path) -> list:
    """The protobuf records of a `.wandb` file: a 7-byte header (":W&B", magic, version), then records in 32 KiB
    blocks, each chunk with a 7-byte header (crc32, little-endian length, type: 1 full, 2 first, 3 middle, 4 last)
    as in LevelDB's log format, which W&B's file follows."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, block, pending, found = 7, 32768, b"", []
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        length, kind = int.from_bytes(data[position + 4:position + 6], "little"), data[position + 6]
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            found.append(record)
            pending = b""
    return found


def history(run_dir: Path) -> tuple[set[str], list[dict[str, str]]]:
    """(the W&B run ids under run_dir, every history row as {key: JSON value})."""
    ids, rows = set(), []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        for record in records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                ids.add(record.run.run_id)
            elif kind == "history":
                rows.append({item.key or "/".join(item.nested_key): item.value_json for item in record.history.item})
    return ids, rows
