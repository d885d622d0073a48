"""Developer tooling around the worker (local broker, child processes, traffic generator,
producer, bench, demo). Nothing in the worker imports it, and the worker image leaves it out."""
