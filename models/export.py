"""ONNX export of the serving model, with a torch-vs-onnxruntime parity check after every export.

The graph is a single file (opset 17, dynamic batch and sequence axes) whose outputs are what
the worker needs for the latest event: next-action probabilities, top-k items and scores (top-k
inside the graph), risk and surprise. Parity above the tolerance fails the export loudly.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import torch

from models.contract import CANDIDATE_OUTPUTS, INPUTS, N_RESERVED_ITEMS, OUTPUTS
from models.network import CandidateServingModel, SequenceTransformer, ServingModel

log = logging.getLogger(__name__)
OPSET = 17
PARITY_TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """The exported graph disagrees with torch or is not a single self-contained file."""


def onnx_bytes(module, example: tuple, inputs: dict, outputs: dict, second_axis: str) -> bytes:
    """``module`` as one self-contained ONNX file (opset ``OPSET``): every input dynamic in its
    batch and its ``second_axis`` (sequence or tokens), every output in its batch."""
    dynamic = {name: {0: "batch", 1: second_axis} for name in inputs}
    dynamic.update({name: {0: "batch"} for name in outputs})
    buffer = io.BytesIO()
    with torch.inference_mode():
        torch.onnx.export(
            module,
            example,
            buffer,  # type: ignore[arg-type]  # file-like objects are accepted too
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    return buffer.getvalue()


def export_onnx(
    net: SequenceTransformer, quantiles: np.ndarray, path: Path, candidates: bool = False
) -> ServingModel | CandidateServingModel:
    """Write ``model.onnx`` for ``net``: the exact graph, or with ``candidates`` the graph
    served through the item index (models/item_index.py). Returns the torch module it came
    from, for the parity check."""
    serving: ServingModel | CandidateServingModel
    if candidates:
        serving, outputs = CandidateServingModel(net).eval(), CANDIDATE_OUTPUTS
    else:
        quantiles_t = torch.from_numpy(np.asarray(quantiles, dtype=np.float32))
        serving, outputs = ServingModel(net, quantiles_t).eval(), OUTPUTS
    example = tuple(torch.zeros((2, 4), dtype=torch.int64) + k for k in (N_RESERVED_ITEMS, 1, 0))
    path.write_bytes(onnx_bytes(serving, example, INPUTS, outputs, "sequence"))
    return serving


def parity(
    serving: ServingModel | CandidateServingModel, path: Path, batch: dict[str, np.ndarray]
) -> float:
    """Max |torch - onnxruntime| over the continuous outputs; top-k indices must agree too.

    ``surprise`` is a calibrated step function (share of quantiles exceeded), so it may differ
    by one quantile step where the raw value sits on a boundary; it is held to that step.
    """
    import onnxruntime as ort

    names = list(CANDIDATE_OUTPUTS if isinstance(serving, CandidateServingModel) else OUTPUTS)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = dict(zip(names, session.run(names, batch), strict=True))
    with torch.inference_mode():
        ref = dict(
            zip(
                names,
                (t.numpy() for t in serving(*(torch.from_numpy(batch[name]) for name in INPUTS))),
                strict=True,
            )
        )
    worst = 0.0
    for name in names:
        if name not in ("top_items", "surprise"):
            worst = max(worst, float(np.max(np.abs(got[name] - ref[name]))))
    if isinstance(serving, CandidateServingModel):
        if worst > PARITY_TOLERANCE:
            raise ExportError(f"ONNX parity {worst:.2e} exceeds {PARITY_TOLERANCE:.0e}")
        return worst
    step = 1.0 / len(serving.quantiles) + 1e-6
    if np.max(np.abs(got["surprise"] - ref["surprise"])) > step:
        raise ExportError("surprise differs by more than one calibration step")
    check_top_items(got["top_items"], ref, lambda r, i: _torch_probability(serving, ref, r, i))
    if worst > PARITY_TOLERANCE:
        raise ExportError(f"ONNX parity {worst:.2e} exceeds {PARITY_TOLERANCE:.0e}")
    return worst


def check_top_items(got_items: np.ndarray, ref: dict, probability) -> None:
    """Raise unless onnxruntime's top-k items are torch's, up to swaps between near-ties.

    A swap is allowed where torch's own probability of the item onnxruntime put in a place
    (``probability(row, item)``) is within the tolerance of the item it displaced. Comparing
    with the displaced item's neighbours in the list instead wrongly refused a swap in the
    last place, whose rival lies outside the top-k."""
    for r, c in zip(*np.nonzero(got_items != ref["top_items"]), strict=True):
        if abs(probability(r, got_items[r, c]) - ref["top_scores"][r, c]) > PARITY_TOLERANCE:
            raise ExportError(f"top-k item {c} of row {r} differs and is not a tie")


def _torch_probability(serving: ServingModel, ref: dict, row: int, item: int) -> float:
    """torch's probability of ``item`` next for ``row``, from its user vector and normaliser."""
    with torch.inference_mode():
        logit = float(serving.table[item] @ torch.from_numpy(ref["user_vector"][row]))
        logit += float(serving.blocked[item])
    return float(np.exp(logit - ref["log_normaliser"][row]))
