"""The hot path from a consumed message to its published outputs: ingest (decode, validate,
dead-letter), per-user sequences, micro-batches, ordered acks and the output records."""
