"""Scoring sequences with the ONNX model: the scorer, the child process it runs in (parent
side, child side and the wire format between them) and the follower that hot-swaps models."""
