"""The sequence Transformer: GPT-2 blocks from ``transformers`` over item, type, gap and position.

Item representations fuse a learned ID embedding with a frozen, whitened MiniLM text embedding
through a learned projection; the next-item head is tied to that table (the loss is chosen in
models/losses.py). Items never seen in training have no ID part, so they are ranked by their
text alone (cold start); ID dropout during training teaches the model to do that well.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import cast

import torch
from torch import nn
from transformers import GPT2Config
from transformers.models.gpt2.modeling_gpt2 import GPT2Block
from transformers.pytorch_utils import Conv1D

from models.contract import MASKED, N_RESERVED_ITEMS, PAD
from models.features import N_GAP_BUCKETS


@dataclass(frozen=True)
class NetworkConfig:
    """Shape and regularisation of the network; saved in the manifest beside the weights.

    Args:
        n_items (int, 0): rows of the item table, reserved slots included. Training fills it
            in from the vocabulary; 0 means "not yet known".
        n_types (int, 0): rows of the event-type table, padding included; filled in likewise.
        hidden (int, 64): width of every embedding and Transformer block (64 suits
            MovieLens-100K).
        layers (int, 2): Transformer blocks.
        heads (int, 2): attention heads per block; must divide ``hidden``.
        dropout (float, 0.2): dropout on embeddings, attention and residuals.
        max_positions (int, 200): longest sequence the position table covers; training uses
            at least ``TrainConfig.max_len``.
        text_dim (int, 384): width of the language-model item embeddings (384 for
            all-MiniLM-L6-v2).
        id_dropout (float, 0.5): share of items whose id embedding is hidden in a training
            step, so the text embedding alone can carry a cold-start item.
        top_k (int, 10): items returned per prediction by the exported model.
    """

    n_items: int = 0
    n_types: int = 0
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2
    max_positions: int = 200
    text_dim: int = 384
    id_dropout: float = 0.5
    top_k: int = 10

    def to_dict(self) -> dict:
        return asdict(self)


class SequenceTransformer(nn.Module):
    """Encodes a left-padded event sequence; heads for next item, next type and risk."""

    def __init__(
        self,
        config: NetworkConfig,
        text: torch.Tensor,
        seen: torch.Tensor,
        text_of_item: torch.Tensor | None = None,
    ) -> None:
        """``text`` holds the whitened text embeddings, one row per distinct text; item ``i``'s
        is row ``text_of_item[i]`` (default: row ``i``, one row per item)."""
        super().__init__()
        self.config = config
        self.text: torch.Tensor
        self.text_of_item: torch.Tensor
        self.seen: torch.Tensor
        d = config.hidden
        if text_of_item is None:
            text_of_item = torch.arange(len(text))
        self.register_buffer("text", text.float(), persistent=True)
        self.register_buffer("text_of_item", text_of_item.long(), persistent=True)
        self.register_buffer("seen", seen.float(), persistent=True)
        self.item_id = nn.Embedding(config.n_items, d, padding_idx=PAD)
        self.text_proj = nn.Linear(config.text_dim, d, bias=False)
        self.type_emb = nn.Embedding(config.n_types, d, padding_idx=0)
        self.gap_emb = nn.Embedding(N_GAP_BUCKETS, d)
        self.pos_emb = nn.Embedding(config.max_positions, d)
        self.drop = nn.Dropout(config.dropout)
        gpt2 = GPT2Config(
            n_embd=d,
            n_layer=config.layers,
            n_head=config.heads,
            n_positions=config.max_positions,
            resid_pdrop=config.dropout,
            attn_pdrop=config.dropout,
            embd_pdrop=config.dropout,
            n_inner=4 * d,
        )
        gpt2._attn_implementation = "eager"  # plain matmuls: exports cleanly to ONNX
        self.blocks = nn.ModuleList(GPT2Block(gpt2, layer_idx=i) for i in range(config.layers))
        self.ln_f = nn.LayerNorm(d)
        self.type_head = nn.Linear(d, config.n_types)
        self.risk_head = nn.Linear(d, 1)
        for table in (self.item_id, self.type_emb, self.gap_emb, self.pos_emb):
            nn.init.normal_(table.weight, std=0.02)  # as GPT-2: no table drowns the others
        with torch.no_grad():
            self.type_emb.weight[0].zero_()
            self.item_id.weight[PAD].zero_()
            self.risk_head.bias.fill_(-4.6)  # prior ≈ 1% until labels train it

    def item_table(self, id_keep: torch.Tensor | None = None) -> torch.Tensor:
        """[n_items, d]: ID part (only for items seen in training) + projected text part."""
        keep = self.seen if id_keep is None else self.seen * id_keep
        text = self.text_proj(self.text)[self.text_of_item]  # each distinct text once
        return self.item_id.weight * keep.unsqueeze(1) + text

    def item_vectors(
        self, items: torch.Tensor, id_keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The rows of :meth:`item_table` for ``items`` only: training never needs the rest."""
        keep = self.seen[items] if id_keep is None else self.seen[items] * id_keep[items]
        text = self.text_proj(self.text[self.text_of_item[items]])
        return self.item_id(items) * keep.unsqueeze(-1) + text

    def hidden_states(self, item_ids, event_types, time_gaps, id_keep=None) -> torch.Tensor:
        """:meth:`encode` with only the batch's own items embedded (not the whole catalog)."""
        items, inverse = torch.unique(item_ids, return_inverse=True)
        return self.encode(inverse, event_types, time_gaps, self.item_vectors(items, id_keep))

    def encode(
        self,
        item_ids: torch.Tensor,
        event_types: torch.Tensor,
        time_gaps: torch.Tensor,
        table: torch.Tensor,
        last: int | None = None,
    ) -> torch.Tensor:
        """Hidden states [B, T, d] under a causal mask that also hides left padding; with
        ``last``, those of the last ``last`` positions only, [B, last, d], computed as serving
        runs them (:func:`serving_block`; eval mode only)."""
        valid = event_types != 0
        length = item_ids.shape[1]
        positions = torch.arange(length - 1, -1, -1, device=item_ids.device)
        positions = positions.clamp(max=self.config.max_positions - 1)
        x = table[item_ids] + self.type_emb(event_types) + self.gap_emb(time_gaps)
        x = self.drop(x + self.pos_emb(positions).unsqueeze(0))
        causal = torch.ones(length, length, device=x.device, dtype=torch.bool).tril()
        allowed = causal.unsqueeze(0) & valid.unsqueeze(1)  # [B, query, key]
        mask = (~allowed).to(x.dtype).unsqueeze(1) * MASKED  # additive, finite: no NaN rows
        if not last:
            for block in self.blocks:
                x = block(x, attention_mask=mask)
            return self.ln_f(x)
        *early, final = (cast(GPT2Block, block) for block in self.blocks)
        for block in early:
            x = serving_block(block, x, mask)
        return self.ln_f(serving_block(final, x, mask[:, :, -last:], last))

    def forward(self, item_ids, event_types, time_gaps, id_keep=None):
        """Outputs for every position over the whole catalog: item logits, type logits, risk
        logits. For small checks and the naive bench; training and evaluation never make
        [batch, positions, n_items]."""
        table = self.item_table(id_keep)
        h = self.encode(item_ids, event_types, time_gaps, table)
        return h @ table.T, self.type_head(h), self.risk_head(h).squeeze(-1)


class _Serving(nn.Module):
    """What both serving graphs share: the network over the item table computed once (the
    graph holds ``[n_items, d]``, not the text it came from), and the heads of the latest
    event."""

    def __init__(self, net: SequenceTransformer) -> None:
        super().__init__()
        self.net = net
        self.table: torch.Tensor
        self.register_buffer("table", net.item_table().detach().clone())

    def latest(self, item_ids, event_types, time_gaps):
        """(last hidden state, the one before it, next-action probabilities, risk)."""
        net = self.net
        h = net.encode(item_ids, event_types, time_gaps, self.table, last=2)
        last, prev = h[:, -1], h[:, -2]
        next_action = torch.softmax(net.type_head(last)[:, 1:], dim=-1)
        risk = torch.sigmoid(net.risk_head(last).squeeze(-1))
        return last, prev, next_action, risk


class ServingModel(_Serving):
    """What the worker runs: outputs for the latest event of each sequence only.

    next_action  [B, n_types-1]  probability of each event type next
    top_items    [B, k] int64    item indices of the k most likely next items
    top_scores   [B, k]          their probabilities
    risk         [B]             supervised fraud probability
    surprise     [B]             share of normal validation events less surprising than the
                                 latest one (label-free anomaly score in [0, 1])
    user_vector  [B, d]          the latest hidden state: an item's logit is its dot product
                                 with the item's vector (how catalog items are ranked)
    log_normaliser [B]           logsumexp of the logits over the items the graph knows
    """

    def __init__(self, net: SequenceTransformer, surprise_quantiles: torch.Tensor) -> None:
        super().__init__(net)
        self.quantiles: torch.Tensor
        self.blocked: torch.Tensor
        self.register_buffer("quantiles", surprise_quantiles.float())
        blocked = torch.zeros(net.config.n_items)
        blocked[:N_RESERVED_ITEMS] = MASKED
        self.register_buffer("blocked", blocked)

    def forward(self, item_ids, event_types, time_gaps):
        last, prev, next_action, risk = self.latest(item_ids, event_types, time_gaps)
        logits = last @ self.table.T + self.blocked
        log_normaliser = exportable_logsumexp(logits)
        item_logp = logits - log_normaliser.unsqueeze(-1)
        top_logp, top_items = torch.topk(item_logp, self.net.config.top_k, dim=-1)
        raw = surprise_raw(
            self.net, prev, self.table, self.blocked, item_ids[:, -1], event_types[:, -1]
        )
        calibrated = (raw.unsqueeze(1) > self.quantiles.unsqueeze(0)).float().mean(dim=1)
        has_prefix = (event_types[:, -2] != 0).float()
        surprise = calibrated * has_prefix
        return next_action, top_items, torch.exp(top_logp), risk, surprise, last, log_normaliser


class CandidateServingModel(_Serving):
    """What the worker runs for a catalog too big for exact top-k: no product with the whole
    item table. Top-k, normalisers and surprise are completed outside the graph with the item
    index (models/item_index.py); this graph gives what they need.

    next_action, risk, user_vector  as in :class:`ServingModel`
    prev_vector    [B, d]  the hidden state before the latest event (surprise's prediction)
    observed_logit [B]     prev_vector · the latest event's item (0 without an item)
    type_nll       [B]     negative log-likelihood of the latest event's type given prev
    """

    def forward(self, item_ids, event_types, time_gaps):
        last, prev, next_action, risk = self.latest(item_ids, event_types, time_gaps)
        last_item = item_ids[:, -1]
        has_item = (last_item >= N_RESERVED_ITEMS).float()
        observed_logit = (prev * self.table[last_item]).sum(dim=-1) * has_item
        nll_type = type_nll(self.net, prev, event_types[:, -1])
        return next_action, risk, last, prev, observed_logit, nll_type


def serving_block(
    block: GPT2Block, x: torch.Tensor, mask: torch.Tensor, last: int | None = None
) -> torch.Tensor:
    """``block`` (a GPT-2 block, eval mode) over ``x`` [B, T, d] the way the serving graph runs
    it: the same arithmetic as ``GPT2Block.forward``, written so that the export has no
    reshapes. GPT-2's own code splits heads with ``view``s of shapes read from the tensor, and
    ``Conv1D`` flattens to 2-D and back; each becomes a chain of Shape, Gather, Unsqueeze,
    Concat and Reshape nodes. Here 3-D products and one slice per head need none: 286 nodes
    before onnxruntime's optimiser instead of 508, a run's fixed cost 97 µs instead of 131, and
    7% less time a sequence at 4 events, 14% at 50 (32 sequences, ML-100K's graph, one thread).

    With ``last``, only the last ``last`` queries are computed (serving reads two hidden states
    a sequence; every position still gives its keys and values): onnxruntime took 0.79 ms
    instead of 1.03 for 32 sequences of 8 events. ``mask`` is the additive mask's rows for the
    queries computed, [B, 1, queries, T]. Unit tests pin this to the block's own output."""
    attn, mlp = block.attn, block.mlp
    d, width = attn.embed_dim, attn.head_dim
    h = block.ln_1(x)
    # the rows queries are computed for; keys and values come from every position
    queries, x = (h, x) if last is None else (h[:, -last:], x[:, -last:])
    weight, bias = attn.c_attn.weight, attn.c_attn.bias  # Conv1D: [d, 3d], query|key|value
    query = queries @ weight[:, :d] + bias[:d]
    key, value = (h @ weight[:, d:] + bias[d:]).split(d, dim=-1)
    mask = mask[:, 0]  # [B, queries, T]: one mask for every head
    heads = []
    for i in range(attn.num_heads):
        part = slice(i * width, (i + 1) * width)
        scores = query[..., part] @ key[..., part].transpose(-1, -2) * attn.scaling + mask
        heads.append(torch.softmax(scores, dim=-1) @ value[..., part])
    x = x + _affine(attn.c_proj, torch.cat(heads, dim=-1))
    return x + _affine(mlp.c_proj, mlp.act(_affine(mlp.c_fc, block.ln_2(x))))


def _affine(layer: Conv1D, x: torch.Tensor) -> torch.Tensor:
    """GPT-2's ``Conv1D`` (a linear layer with its weight stored [in, out]) on any rank."""
    return x @ layer.weight + layer.bias


def type_nll(net, prev_h, last_type):
    """Negative log-likelihood of the latest event's type given what preceded it."""
    type_logp = torch.log_softmax(net.type_head(prev_h)[:, 1:], dim=-1)
    type_index = (last_type - 1).clamp(min=0)
    return -type_logp.gather(1, type_index.unsqueeze(1)).squeeze(1)


def exportable_logsumexp(x: torch.Tensor) -> torch.Tensor:
    """logsumexp over the last axis, summed in float64: max + log Σ exp(x - max).

    Why not ``torch.logsumexp``: it exports to ONNX's ReduceLogSumExp, whose onnxruntime CPU
    kernel accumulates in float32, so its error grows with the catalog: 1.1e-4 to 1.3e-3 off
    torch on a trained 338,579-item table, 4.3e-4 on 300,000 Gumbel logits. A float32
    ReduceSum still drifted by 5e-5 on the latter; the float64 sum stays under 1e-6 and
    costs about the same as the kernel it replaces."""
    top = x.max(dim=-1, keepdim=True).values
    return (x - top).exp().double().sum(dim=-1).log().float() + top.squeeze(-1)


def surprise_raw(net, prev_h, table, blocked, last_item, last_type):
    """Negative log-likelihood of the latest event (item and type) given what preceded it."""
    item_logp = torch.log_softmax(prev_h @ table.T + blocked, dim=-1)
    nll_item = -item_logp.gather(1, last_item.unsqueeze(1)).squeeze(1)
    nll_item = (
        nll_item * (last_item >= N_RESERVED_ITEMS).float()
    )  # events without an item add nothing
    return nll_item + type_nll(net, prev_h, last_type)
