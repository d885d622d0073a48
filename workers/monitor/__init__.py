"""``foresight monitor``: one read-only page that shows what Foresight publishes (trends with
their sentiment, alerts with their reasons) and how its workers are doing (from their metrics).

It is built only on the public ``trends`` and ``alerts`` topics and the workers' Prometheus
endpoints: what a subscriber could build. ``state`` holds a bounded view of them, ``feeds``
fills it, ``app`` serves the page and its live updates.
"""
