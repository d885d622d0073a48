"""The batch-observed histogram exposes exactly what prometheus_client's Histogram would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from workers.metrics import BatchHistogram

BOUNDS = (0.005, 0.01, 0.05, 0.1, 1.0, 10.0)


@given(
    st.lists(
        st.lists(
            st.one_of(
                st.sampled_from([0.0, *BOUNDS]),  # on a bound: counted in its bucket (le)
                st.floats(min_value=0, max_value=50, allow_nan=False),
            ),
            max_size=40,
        ),
        max_size=5,
    )
)
def test_batches_expose_the_series_a_histogram_observing_each_value_would(batches) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batched = BatchHistogram("e2e_seconds", "latency", BOUNDS, ours)
    single = Histogram("e2e_seconds", "latency", buckets=BOUNDS, registry=theirs)
    for batch in batches:
        batched.observe_many(batch)
        for value in batch:
            single.observe(value)
    ours_sum, ours_rest = _split(ours)
    theirs_sum, theirs_rest = _split(theirs)
    assert ours_rest == theirs_rest  # every bucket and the count
    assert abs(ours_sum - theirs_sum) < 1e-9  # summed per batch: the order differs


def _split(registry: CollectorRegistry) -> tuple[float, list[bytes]]:
    """The exposition's sum, and its other lines (without the creation time)."""
    lines = [line for line in generate_latest(registry).splitlines() if b"_created" not in line]
    (total,) = [float(line.split()[-1]) for line in lines if b"_sum " in line]
    return total, [line for line in lines if b"_sum " not in line]
