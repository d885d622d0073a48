"""Glue to Kafka and Faust: the one shim over their private attributes, the eager consumer,
the batched publisher, topic administration and log rate limits."""
