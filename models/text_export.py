"""The text encoder the worker embeds catalog items with, exported beside the sequence model.

It is exactly the trainer's text path in one graph: all-MiniLM-L6-v2 (frozen, fp32), mean
pooling, L2 normalisation, the whitening fitted on the training catalog, and the network's
own projection into item space. So an item published to ``catalog`` after training gets the
vector it would have had as a cold-start item in training (checked: ``parity`` below, and the
cold-start run's catalog-path metrics in the training report).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.contract import TEXT_ENCODER_INPUTS, TEXT_ENCODER_OUTPUTS
from models.export import PARITY_TOLERANCE, ExportError, onnx_bytes
from models.network import SequenceTransformer
from models.text import Whitening, model_dir

#: Tokens per item text, as the trainer's embedding uses (models/text.py).
ITEM_TEXT_TOKENS = 128


class TextEncoderServing(nn.Module):
    """ids, mask → (whitened text embedding [B, 384], item vector [B, d])."""

    def __init__(self, net: SequenceTransformer, whitening: Whitening) -> None:
        super().__init__()
        from transformers import AutoModel

        self.encoder = AutoModel.from_pretrained(model_dir(), local_files_only=True).eval()
        self.encoder.config._attn_implementation = "eager"  # plain matmuls: exports cleanly
        self.project = net.text_proj
        self.mean: torch.Tensor
        self.matrix: torch.Tensor
        self.register_buffer("mean", torch.from_numpy(np.asarray(whitening.mean, np.float32)))
        self.register_buffer("matrix", torch.from_numpy(np.asarray(whitening.matrix, np.float32)))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        text = (nn.functional.normalize(pooled, dim=-1) - self.mean) @ self.matrix
        return text, self.project(text)


def export_text_encoder(net: SequenceTransformer, whitening: Whitening, path: Path) -> None:
    """Write ``text_encoder.onnx`` for ``net`` (its projection) and ``whitening``."""
    serving = TextEncoderServing(net, whitening).eval()
    example = (torch.ones((2, 8), dtype=torch.int64), torch.ones((2, 8), dtype=torch.int64))
    inputs, outputs = TEXT_ENCODER_INPUTS, TEXT_ENCODER_OUTPUTS
    path.write_bytes(onnx_bytes(serving, example, inputs, outputs, "tokens"))


def encode_with_graph(path: Path, tokenizer_file: Path, texts: list[str]) -> dict[str, np.ndarray]:
    """The graph's outputs for ``texts``, tokenised as the worker tokenises them."""
    import onnxruntime as ort

    from models.text_runtime import TextEncoder, load_tokenizer

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    encoder = TextEncoder(session, load_tokenizer(tokenizer_file, ITEM_TEXT_TOKENS), "")
    return encoder.encode(texts)


def parity(net: SequenceTransformer, items: list[int], outputs: dict) -> float:
    """Max |graph - training| over the whitened embeddings and item vectors of ``items``
    (against the network's own text rows); above the tolerance it raises."""
    with torch.inference_mode():
        trained = net.text[net.text_of_item[items]]
        expected = net.text_proj(trained).numpy()
    worst = max(
        float(np.max(np.abs(outputs["text"] - trained.numpy()))),
        float(np.max(np.abs(outputs["item_vector"] - expected))),
    )
    if worst > 10 * PARITY_TOLERANCE:  # MiniLM's 6 layers in fp32 on two runtimes
        raise ExportError(f"text encoder parity {worst:.2e} exceeds {10 * PARITY_TOLERANCE:.0e}")
    return worst


def add_text_encoder(stage: Path, net: SequenceTransformer, data, sample: int = 64) -> dict:
    """Export the text encoder into the staged artifact and check it against the training
    tables on up to ``sample`` items with text; returns its manifest entry."""
    import shutil

    from models.contract import N_RESERVED_ITEMS, sha256_of
    from models.sentiment import tokenizer_path

    assert data.whitening is not None, "only artifacts whose items have text get an encoder"
    graph = stage / "text_encoder.onnx"
    export_text_encoder(net, data.whitening, graph)
    shutil.copyfile(tokenizer_path(), stage / "tokenizer.json")
    items = [(i, t) for i, t in enumerate(data.vocab.items) if data.vocab.item_text.get(t)]
    items = items[:sample]
    outputs = encode_with_graph(
        graph, stage / "tokenizer.json", [data.vocab.item_text[t] for _, t in items]
    )
    worst = parity(net, [N_RESERVED_ITEMS + i for i, _ in items], outputs)
    return {
        "sha256": sha256_of(graph),
        "tokenizer_sha256": sha256_of(stage / "tokenizer.json"),
        "max_tokens": ITEM_TEXT_TOKENS,
        "parity_max_abs_diff": worst,
        "inputs": [{"name": n, "type": t} for n, (t, _) in TEXT_ENCODER_INPUTS.items()],
        "outputs": [{"name": n, "type": t} for n, (t, _) in TEXT_ENCODER_OUTPUTS.items()],
    }


def catalog_path_metrics(net: SequenceTransformer, data, hidden: set[int], cases, max_len: int):
    """The cold-start run again, with the hidden items' text rows computed as the worker
    computes a catalog item's (through the exported graph and the artifact's tokenizer)
    instead of the trainer's: HR@10 and NDCG@10 must agree with the training-time ones."""
    import tempfile

    from models.sentiment import tokenizer_path
    from models.train import evaluate

    rows = sorted(i for i in hidden if data.vocab.item_text.get(data.vocab.item_id(i)))
    with tempfile.TemporaryDirectory() as tmp:
        graph = Path(tmp) / "text_encoder.onnx"
        export_text_encoder(net, data.whitening, graph)
        texts = [data.vocab.item_text[data.vocab.item_id(i)] for i in rows]
        outputs = encode_with_graph(graph, tokenizer_path(), texts)
    trained, trained_of_item = net.text, net.text_of_item
    try:  # the served rows appended, the hidden items pointed at them
        net.text = torch.cat([trained, torch.from_numpy(outputs["text"])])
        net.text_of_item = trained_of_item.clone()
        net.text_of_item[rows] = torch.arange(len(trained), len(trained) + len(rows))
        served = evaluate(net, cases, max_len)
    finally:
        net.text, net.text_of_item = trained, trained_of_item
    return {
        "hr@10": served["hr@10"],
        "ndcg@10": served["ndcg@10"],
        "items": len(rows),
        "max_abs_diff": float(
            np.max(np.abs(outputs["text"] - trained[trained_of_item[rows]].numpy()))
        )
        if rows
        else 0.0,
    }
