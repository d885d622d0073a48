"""Next-item losses whose memory does not grow with the catalog beyond one bounded chunk.

Both score only the positions that have an item target (never [batch, positions, n_items]).

- ``full``: softmax cross-entropy over every item the training data knows, computed over
  chunks of positions with activation checkpointing, so at most one chunk's logits
  ([positions_per_chunk, n_items]) are alive at a time. Exact; cost grows with the catalog.
- ``sampled``: sampled softmax (Jean et al. 2015; Yi et al. 2019) over the batch's own targets
  (in-batch negatives) plus uniformly drawn training items, every candidate's logit corrected
  by the log of its chance to be a candidate (logQ), as in SASRec with sampled softmax
  (Klenitskiy and Vasilev 2023, "Turning Dross Into Gold Loss"). Cost and memory depend on the
  batch and the number of negatives only.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from models.contract import MASKED

POSITIONS_PER_CHUNK = 1024


def _chunk_loss(h: torch.Tensor, table: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor):
    return F.cross_entropy(h @ table.T + mask, targets, reduction="sum")


def full_softmax(
    h: torch.Tensor, targets: torch.Tensor, table: torch.Tensor, excluded: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy of ``targets`` [P] given hidden states ``h`` [P, d] over ``table``
    [n_items, d]; ``excluded`` [n_items] is 0 for candidates and MASKED for the rest."""
    total = h.new_zeros(())
    for start in range(0, len(h), POSITIONS_PER_CHUNK):
        part = slice(start, start + POSITIONS_PER_CHUNK)
        total = total + checkpoint(
            _chunk_loss, h[part], table, excluded, targets[part], use_reentrant=False
        )
    return total / max(len(h), 1)


class SampledSoftmax:
    """In-batch + uniform negatives with the logQ correction.

    ``frequency`` [n_items] counts each item as a training target; items with a zero count are
    never candidates (nothing is known of them), as in the full loss.
    """

    def __init__(self, frequency: torch.Tensor, negatives: int, generator: torch.Generator):
        self.pool = torch.nonzero(frequency > 0).squeeze(1)
        self.share = frequency.double() / frequency.sum().clamp(min=1)
        self.negatives = negatives
        self.generator = generator
        # the chance that a given training item is among the uniform draws: the same every step
        self.uniform = -math.expm1(negatives * math.log1p(-1.0 / max(len(self.pool), 1)))

    def candidates(self, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(candidate items, sorted and unique; log of each one's chance to be drawn)."""
        drawn = self.pool[
            torch.randint(len(self.pool), (self.negatives,), generator=self.generator)
        ]
        items = torch.unique(torch.cat([targets, drawn]))
        # P(j among the batch's targets) and P(j among the uniform draws), as independent events
        in_batch = -torch.expm1(len(targets) * torch.log1p(-self.share[items].clamp(max=1 - 1e-12)))
        chance = 1.0 - (1.0 - in_batch) * (1.0 - self.uniform)
        return items, torch.log(chance).float()

    def __call__(self, net, h: torch.Tensor, targets: torch.Tensor, id_keep) -> torch.Tensor:
        items, log_chance = self.candidates(targets)
        logits = h @ net.item_vectors(items, id_keep).T - log_chance
        return F.cross_entropy(logits, torch.searchsorted(items, targets))


def excluded_items(seen: torch.Tensor, n_reserved: int) -> torch.Tensor:
    """[n_items]: 0 for items the training data has, MASKED for the rest and reserved slots."""
    mask = (1.0 - seen) * MASKED
    mask[:n_reserved] = MASKED
    return mask
