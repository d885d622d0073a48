"""The wire format between the worker and its scoring process: length-prefixed frames on the
child's stdin/stdout, plain bytes and JSON.

    b"L" + JSON {"directory", "max_length", "threads", "sha256" (announced, or null)}
        -> b"O" + JSON {"version", "event_types", "item_ids"}  |  b"E" + why it was refused
    b"S" + version + encoded prefixes + texts  ->  b"R" + shape + arrays + new item ids
                                                    + each row's prediction JSON
                                                |  b"E" + why it failed
    b"C" + JSON {"put": [[item_id, text], ...], "remove": [item_id, ...], "limit"}
        -> b"O" + JSON {"items": catalog items kept}

A score request's texts are sparse (most events carry none): a count, then (row, UTF-8 text)
for each row that has one; its reply's ``sentiment`` array is NaN on the other rows.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import IO

import numpy as np

FRAME = struct.Struct("<I")
_COUNT = struct.Struct("<I")
_SHAPE = struct.Struct("<III")  # batch, next-action classes, top-k
KEPT_MODELS = 2
"""Models the child keeps loaded (the current one and the one before it, for a batch still in
flight at a swap); the parent replays as many load requests after restarting the child."""


def frame(payload: bytes) -> bytes:
    """A payload with its length in front: what both ends write."""
    return FRAME.pack(len(payload)) + payload


def write(stream: IO[bytes], payload: bytes) -> None:
    stream.write(frame(payload))
    stream.flush()


def read(stream: IO[bytes]) -> bytes | None:
    """One frame, or None when the other side has closed the pipe."""
    head = stream.read(FRAME.size)
    if len(head) < FRAME.size:
        return None
    (size,) = FRAME.unpack(head)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return payload


def encode_prefixes(version: str, prefixes: list[bytes], texts: list[str | None]) -> bytes:
    """A score request: the model version, each prefix in the table's encoding, and the text
    of each row that has one (its scored event's review or search text)."""
    name = version.encode()
    parts = [b"S", struct.pack("<H", len(name)), name, _write_parts(prefixes)]
    with_text = [(row, text.encode()) for row, text in enumerate(texts) if text]
    parts.append(_COUNT.pack(len(with_text)))
    for row, raw in with_text:
        parts += (_COUNT.pack(row), _COUNT.pack(len(raw)), raw)
    return b"".join(parts)


def _read_parts(payload: bytes, offset: int) -> tuple[list[bytes], int]:
    """A count, then that many length-prefixed parts, from ``offset``; (parts, next offset)."""
    (count,) = _COUNT.unpack_from(payload, offset)
    offset += _COUNT.size
    parts = []
    for _ in range(count):
        (size,) = _COUNT.unpack_from(payload, offset)
        offset += _COUNT.size
        parts.append(payload[offset : offset + size])
        offset += size
    return parts, offset


def decode_prefixes(payload: bytes) -> tuple[str, list[bytes], dict[int, str]]:
    """(version, prefixes, row → text)."""
    (n_name,) = struct.unpack_from("<H", payload, 1)
    offset = 3 + n_name
    version = payload[3:offset].decode()
    blobs, offset = _read_parts(payload, offset)
    (n_texts,) = _COUNT.unpack_from(payload, offset)
    offset += _COUNT.size
    texts = {}
    for _ in range(n_texts):
        row, size = struct.unpack_from("<II", payload, offset)
        offset += 8
        texts[row] = payload[offset : offset + size].decode()
        offset += size
    return version, blobs, texts


def encode_outputs(
    outputs: dict[str, np.ndarray],
    next_action_json: Sequence[bytes] = (),
    top_items_json: Sequence[bytes] = (),
) -> bytes:
    """A score reply: the arrays, the names of new items, and each row's ``next_action``
    and ``top_items`` as JSON (workers/scoring/scorer.py ``prediction_json``)."""
    top = np.ascontiguousarray(outputs["top_items"], dtype=np.int64)
    next_action = np.ascontiguousarray(outputs["next_action"], dtype=np.float32)
    return b"".join(
        [
            b"R",
            _SHAPE.pack(*next_action.shape, top.shape[1]),
            next_action.tobytes(),
            top.tobytes(),
            *(
                np.ascontiguousarray(outputs[name], dtype=np.float32).tobytes()
                for name in ("top_scores", "risk", "surprise", "sentiment")
            ),
            _write_parts([name.encode() for name in outputs.get("new_item_ids", ())]),
            _write_rows(next_action_json),
            _write_rows(top_items_json),
        ]
    )


def _write_rows(rows: Sequence[bytes]) -> bytes:
    """A count, the rows' end offsets (int32), then the rows back to back: read back with
    one slice a row (``_read_rows``), not a length to unpack for each."""
    ends = np.cumsum([len(row) for row in rows], dtype=np.int32)
    return b"".join([_COUNT.pack(len(rows)), ends.tobytes(), *rows])


def _read_rows(payload: bytes, offset: int) -> tuple[list[bytes], int]:
    (count,) = _COUNT.unpack_from(payload, offset)
    offset += _COUNT.size
    ends = np.frombuffer(payload, dtype=np.int32, count=count, offset=offset).tolist()
    offset += 4 * count
    if not ends:
        return [], offset
    starts = [offset, *(offset + end for end in ends[:-1])]
    rows = [payload[start : offset + end] for start, end in zip(starts, ends, strict=True)]
    return rows, offset + ends[-1]


def _write_parts(values: list[bytes]) -> bytes:
    """A count, then each part's length and bytes (what ``_read_parts`` reads)."""
    parts = [_COUNT.pack(len(values))]
    for value in values:
        parts += (_COUNT.pack(len(value)), value)
    return b"".join(parts)


def decode_outputs(payload: bytes) -> dict[str, np.ndarray]:
    batch, classes, k = _SHAPE.unpack_from(payload, 1)
    offset = 1 + _SHAPE.size

    def take(dtype, *shape: int) -> np.ndarray:
        nonlocal offset
        array = np.frombuffer(payload, dtype=dtype, count=math.prod(shape), offset=offset)
        offset += array.nbytes
        return array.reshape(shape)

    outputs: dict = {
        "next_action": take(np.float32, batch, classes),
        "top_items": take(np.int64, batch, k),
        "top_scores": take(np.float32, batch, k),
        "risk": take(np.float32, batch),
        "surprise": take(np.float32, batch),
        "sentiment": take(np.float32, batch),
    }
    names, offset = _read_parts(payload, offset)
    outputs["new_item_ids"] = [name.decode() for name in names]
    outputs["next_action_json"], offset = _read_rows(payload, offset)
    outputs["top_items_json"], offset = _read_rows(payload, offset)
    return outputs
