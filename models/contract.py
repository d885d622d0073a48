"""The contract between the trainer and the worker, free of torch: what a model artifact takes
and returns, and the item slots every vocabulary reserves.

The trainer exports to it (models/export.py), the runtime checks every artifact against it
(models/runtime.py), and the worker feeds and reads it (workers/scoring/).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

#: The graph's inputs, name → (ONNX type, rank): left-padded [batch, sequence] indices.
INPUTS = {
    "item_ids": ("tensor(int64)", 2),
    "event_types": ("tensor(int64)", 2),
    "time_gaps": ("tensor(int64)", 2),
}
#: The graph's outputs, name → (ONNX type, rank), one row per sequence.
OUTPUTS = {
    "next_action": ("tensor(float)", 2),
    "top_items": ("tensor(int64)", 2),
    "top_scores": ("tensor(float)", 2),
    "risk": ("tensor(float)", 1),
    "surprise": ("tensor(float)", 1),
    # what ranks items the graph does not know (catalog items published after training): an
    # item's logit is user_vector · its vector, its probability exp(logit - log_normaliser)
    # once the normaliser counts it too
    "user_vector": ("tensor(float)", 2),
    "log_normaliser": ("tensor(float)", 1),
}
#: The graph of an artifact served through the item index (manifest ``"serving":
#: "candidates"``, models/item_index.py), which completes ``OUTPUTS`` from these: no output
#: is computed over the whole catalog.
CANDIDATE_OUTPUTS = {
    "next_action": ("tensor(float)", 2),
    "risk": ("tensor(float)", 1),
    "user_vector": ("tensor(float)", 2),
    "prev_vector": ("tensor(float)", 2),
    "observed_logit": ("tensor(float)", 1),
    "type_nll": ("tensor(float)", 1),
}

#: The sequence graph's int8 copy, in artifacts whose copy ranked as well as the fp32 graph
#: (manifest ``int8``, models/quantise.py); served on CPU unless the worker asks for fp32.
INT8_GRAPH = "model.int8.onnx"
#: What a worker may ask of an artifact's sequence graph: "auto" serves the int8 copy on a
#: CPU-only machine where the artifact has one, "fp32" always the graph held to torch.
PRECISIONS = ("auto", "fp32")

#: The sentiment graph (``sentiment.onnx``, optional in an artifact): WordPiece ids and their
#: mask, right-padded [batch, tokens] → one score in [-1, 1] per text.
SENTIMENT_INPUTS = {
    "input_ids": ("tensor(int64)", 2),
    "attention_mask": ("tensor(int64)", 2),
}
SENTIMENT_OUTPUTS = {"sentiment": ("tensor(float)", 1)}
#: The text encoder (``text_encoder.onnx``, in artifacts whose items had text): the trainer's
#: frozen all-MiniLM-L6-v2 sentence embedding, whitened as in training (``text``) and projected
#: into the model's item space (``item_vector``), for catalog items that arrive after training.
TEXT_ENCODER_INPUTS = SENTIMENT_INPUTS
TEXT_ENCODER_OUTPUTS = {"text": ("tensor(float)", 2), "item_vector": ("tensor(float)", 2)}
#: Texts that every sentiment graph must score finite and in range before it serves.
GOLDEN_TEXTS = ("", "great, works perfectly", "broken on arrival. refund!", "ok " * 200)

#: Item indices every vocabulary reserves before the real items: padding, an event without an
#: item, and an item the model has never seen.
PAD, NO_ITEM, UNKNOWN_ITEM = 0, 1, 2
SPECIAL_ITEMS = ("<pad>", "<none>", "<unknown>")
N_RESERVED_ITEMS = len(SPECIAL_ITEMS)
#: The logit added to items that must never be recommended (the reserved slots; in training,
#: items no one has seen): softmax gives them zero.
MASKED = -1e9


def sha256_of(*paths: Path) -> str:
    """Hex sha256 of the files' bytes, one after the other, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
