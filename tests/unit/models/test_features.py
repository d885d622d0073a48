"""Padding: the batch form the scoring process builds in a few whole-array steps must be, row by
row, the plain left-padded sequence the model was trained on."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from models.features import gap_buckets, pad_batch

sequences = st.lists(
    st.lists(
        st.tuples(st.integers(0, 99), st.integers(0, 7), st.floats(0, 1e7, allow_nan=False)),
        max_size=12,
    ),
    min_size=1,
    max_size=8,
)


@given(sequences, st.one_of(st.none(), st.integers(1, 14)))
def test_each_row_is_its_latest_events_left_padded(seqs, length) -> None:
    items = [[e[0] for e in s] for s in seqs]
    types = [[e[1] for e in s] for s in seqs]
    ts = [[e[2] for e in s] for s in seqs]
    batch = pad_batch(items, types, ts, length)
    width = max(2, length or max(len(s) for s in seqs))
    assert {a.shape for a in batch.values()} == {(len(seqs), width)}
    for row, s in enumerate(seqs):
        kept = s[-width:] if s else []
        pad = width - len(kept)
        assert batch["item_ids"][row].tolist() == [0] * pad + [e[0] for e in kept]
        assert batch["event_types"][row].tolist() == [0] * pad + [e[1] for e in kept]
        gaps = gap_buckets(np.array([e[2] for e in kept])).tolist()
        assert batch["time_gaps"][row].tolist() == [0] * pad + gaps
