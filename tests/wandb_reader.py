"""Read an offline W&B run file (``wandb/offline-run-*/run-*.wandb``) without the W&B service.

The file is a LevelDB-style log: a 7-byte file header (``:W&B``, magic
0xBEE1, version 0), then 32 KiB blocks of chunks, each with a 7-byte header
``crc32c(4) length(2) type(1)`` (types FULL=1, FIRST=2, MIDDLE=3, LAST=4).
Chunks join into records, each a serialized ``wandb_internal_pb2.Record``.

Shared by tests that check what a run logged: :func:`read_run` gives the
history rows, the config, the summary, the tags and the logged media.
"""
from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
CHUNK_HEADER = 7
FILE_HEADER = struct.pack("<4sHB", b":W&B", 0xBEE1, 0)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _checksum_ok(stored: int, kind: int, payload: bytes) -> bool:
    import zlib

    # The Go service uses CRC-32C over type byte + payload; the old Python writer used zlib's CRC-32.
    body = bytes([kind]) + payload
    return stored in (crc32c(body), zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF)


def raw_records(path: str | Path, *, verify: bool = True) -> Iterator[bytes]:
    """The serialized records in ``path``, in order."""
    data = Path(path).read_bytes()
    if not data.startswith(FILE_HEADER):
        raise ValueError(f"{path} is not a W&B run file (header {data[:7]!r})")
    pos = len(FILE_HEADER)
    pending: bytearray | None = None
    while pos + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < CHUNK_HEADER:  # block trailer padding
            pos += left_in_block
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += left_in_block
            continue
        payload = data[pos + CHUNK_HEADER: pos + CHUNK_HEADER + length]
        if len(payload) < length:
            break  # truncated tail (the run was still being written)
        if verify and not _checksum_ok(crc, kind, payload):
            raise ValueError(f"{path}: bad checksum at offset {pos}")
        pos += CHUNK_HEADER + length
        if kind == FULL:
            yield payload
        elif kind == FIRST:
            pending = bytearray(payload)
        elif kind == MIDDLE and pending is not None:
            pending += payload
        elif kind == LAST and pending is not None:
            pending += payload
            yield bytes(pending)
            pending = None
        else:
            raise ValueError(f"{path}: unexpected chunk type {kind} at offset {pos}")


def records(path: str | Path) -> Iterator[Any]:
    """Each record as a ``wandb.proto.wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2 as pb

    for raw in raw_records(path):
        rec = pb.Record()
        rec.ParseFromString(raw)
        yield rec


def _value(item: Any) -> Any:
    text = item.value_json
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _key(item: Any) -> str:
    return item.key if item.key else "/".join(item.nested_key)


@dataclass
class RunFile:
    """What an offline run logged."""

    path: Path
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def series(self, key: str) -> list[tuple[int, Any]]:
        """``(step, value)`` for every history row that has ``key``."""
        return [(int(r.get("_step", -1)), r[key]) for r in self.history if key in r]

    def media(self, key: str) -> list[dict[str, Any]]:
        """Logged media (images) under ``key``: ``{"_type": ..., "filenames": [...], ...}`` per history row."""
        out = []
        for row in self.history:
            if f"{key}/_type" in row:
                out.append({k.split("/", 1)[1]: v for k, v in row.items() if k.startswith(key + "/")})
        return out


def read_run(path: str | Path) -> RunFile:
    """Parse one ``run-*.wandb`` file into a :class:`RunFile`."""
    out = RunFile(Path(path))
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run = rec.run
            out.name = run.display_name
            out.group = run.run_group
            out.job_type = run.job_type
            out.tags = list(run.tags)
            for item in run.config.update:
                out.config[_key(item)] = _value(item)
        elif kind == "config":
            for item in rec.config.update:
                out.config[_key(item)] = _value(item)
        elif kind == "history":
            out.history.append({_key(item): _value(item) for item in rec.history.item})
        elif kind == "summary":
            for item in rec.summary.update:
                out.summary[_key(item)] = _value(item)
        elif kind == "files":
            out.files.extend(f.path for f in rec.files.files)
    return out


def offline_runs(root: str | Path) -> list[Path]:
    """Every ``run-*.wandb`` file under ``root/wandb/offline-run-*``."""
    return sorted(Path(root).glob("wandb/offline-run-*/run-*.wandb"))


def config_value(config: dict[str, Any], dotted: str) -> Any:
    """``config_value(cfg, "trial.params")``: follow W&B's ``{"value": ...}`` wrappers and nested keys."""
    cur: Any = config
    for part in dotted.split("."):
        if isinstance(cur, dict) and "value" in cur and part not in cur and len(cur) <= 2:
            cur = cur["value"]
        cur = cur[part]
    if isinstance(cur, dict) and set(cur) <= {"value", "desc"} and "value" in cur:
        cur = cur["value"]
    return cur
