"""What the worker derives besides predictions (alert policy, trend aggregation, sentiment):
pure logic with no I/O, unit-tested without Kafka."""
