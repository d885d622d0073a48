"""int8 dynamic quantisation of an ONNX graph, and the ranking check that decides whether the
sequence model's int8 graph may serve.

onnxruntime's ``quantize_dynamic`` stores the weights of the matrix products as int8 and
quantises their inputs on each call. The sequence graph's int8 copy (``model.int8.onnx``) is
served on CPU only where its NDCG@10 on the validation split is within ``NDCG_TOLERANCE`` of the
fp32 graph's, both measured through onnxruntime on the same users; the test split is reported
beside it (the training report's ``int8``).

A sequence's int8 outputs depend slightly on the others in its call: the inputs of a product
are quantised with one scale per call. Between a sequence scored alone and in a call of 64
(ML-100K's trained graph): top-item scores moved by up to 1.9e-3, risk by 4e-4, surprise by up
to 5 of its 1,001 calibration steps, and 14 of 64 top-10 lists changed an item (97.8% of items
kept). A worker that needs repeatable scores serves fp32 (``FORESIGHT_SCORING_PRECISION=fp32``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from models.contract import INT8_GRAPH, sha256_of
from models.evaluate import EvalCase, metrics_from_ranks, streamed_ranks
from models.train import case_arrays

NDCG_TOLERANCE = 0.002
#: Sequences a call while evaluating: the worker's default batch size, so the quantisation
#: scales are those of calls as large as serving makes (larger calls quantise more coarsely).
EVAL_BATCH = 256


def quantise_int8(src: Path, dst: Path, per_channel: bool) -> None:
    """Write ``dst``: ``src`` with int8 weights in its matrix products (MatMul, and Gemm, which
    the quantiser turns into MatMul + Add), per output channel or one scale a weight. Gathers
    (embedding tables) stay fp32: quantising them costs accuracy and saves no time.

    The quantiser transposes a Gemm's weight in place on the assumption that no other node reads
    it (onnxruntime/quantization/onnx_model.py); the sequence graph's type head serves two Gemms,
    and the second then multiplies by the transposed weight and fails to load. Each Gemm gets
    its own copy of a weight it shares first."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    weights = {t.name: t for t in model.graph.initializer}
    claimed: set[str] = set()
    for node in (n for n in model.graph.node if n.op_type == "Gemm"):
        for k, name in enumerate(node.input[1:], start=1):
            if name in claimed and name in weights:
                copy = onnx.TensorProto()
                copy.CopyFrom(weights[name])
                copy.name = f"{name}/{node.name}"
                model.graph.initializer.append(copy)
                node.input[k] = copy.name
            claimed.add(name)
    logging.disable(logging.WARNING)  # the quantiser logs a line per tensor it leaves alone
    try:
        quantize_dynamic(
            model,
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            op_types_to_quantize=["MatMul"],  # Gemms are MatMul + Add by then
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        logging.disable(logging.NOTSET)


def ranking_session(path: Path):
    """A one-thread CPU session on the graph at ``path`` that also returns what it ranks items
    by: the input of its TopK (each item's log-probability) for an exact graph. A candidate
    graph has no TopK; its items are ranked by ``user_vector`` outside it."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    topk = [n for n in model.graph.node if n.op_type == "TopK"]
    if topk:
        ranked = onnx.helper.make_tensor_value_info(topk[0].input[0], onnx.TensorProto.FLOAT, None)
        model.graph.output.append(ranked)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session, (topk[0].input[0] if topk else None)


class GraphScores:
    """Block scorer for :func:`streamed_ranks` through an ONNX graph: one call per chunk of
    ``EVAL_BATCH`` cases, padded as the trainer's evaluation pads them. ``table`` ([n_items, d])
    ranks a candidate graph's user vectors as the item index does, exactly."""

    def __init__(self, path: Path, cases: list[EvalCase], max_len: int, table: np.ndarray):
        self.session, self.ranked = ranking_session(path)
        self.cases, self.max_len, self.table = cases, max_len, table
        self.rows: slice | None = None
        self.scores = np.zeros((0, 0), dtype=np.float32)

    def __call__(self, rows: slice, items: slice) -> np.ndarray:
        if rows != self.rows:
            batch = case_arrays(self.cases[rows], self.max_len)
            (self.scores,) = self.session.run([self.ranked or "user_vector"], batch)
            self.rows = rows
        if self.ranked is None:
            return self.scores @ self.table[items].T
        return np.array(self.scores[:, items])


def graph_metrics(path: Path, cases: list[EvalCase], max_len: int, table: np.ndarray) -> dict:
    """EVAL_PROTOCOL.md metrics of the graph at ``path`` as onnxruntime runs it."""
    scores = GraphScores(path, cases, max_len, table)
    return metrics_from_ranks(streamed_ranks(scores, cases, len(table), users_per_chunk=EVAL_BATCH))


def add_int8(
    stage: Path, splits: dict[str, list[EvalCase]], max_len: int, table: np.ndarray
) -> tuple[dict | None, dict]:
    """Quantise ``stage/model.onnx`` and keep the int8 graph only if its validation NDCG@10
    holds. Returns (the manifest's ``int8`` entry or None, the report's ``int8``: each split's
    metrics for both graphs side by side, and the decision)."""
    fp32, int8 = stage / "model.onnx", stage / INT8_GRAPH
    quantise_int8(fp32, int8, per_channel=False)
    report: dict = {"quantisation": "int8 dynamic, per tensor, MatMul and Gemm weights"}
    for split, cases in splits.items():
        report[split] = {
            "fp32": graph_metrics(fp32, cases, max_len, table),
            "int8": graph_metrics(int8, cases, max_len, table),
        }
    drop = report["validation"]["fp32"]["ndcg@10"] - report["validation"]["int8"]["ndcg@10"]
    report.update(validation_ndcg_drop=drop, tolerance=NDCG_TOLERANCE)
    report["served"] = drop <= NDCG_TOLERANCE
    if not report["served"]:
        int8.unlink()
        return None, report
    return {"sha256": sha256_of(int8), "validation_ndcg_drop": drop}, report
