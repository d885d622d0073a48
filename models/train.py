"""Training: sequences → Transformer → early stopping → metrics; the loss in models/losses.py.

The split, metrics and baselines follow EVAL_PROTOCOL.md exactly: leave-last-out per user, full
ranking over all items, the user's own input items excluded. Deterministic for a seed on CPU.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from models.contract import MASKED, N_RESERVED_ITEMS, NO_ITEM
from models.data import History, user_sequences
from models.evaluate import (
    EvalCase,
    markov,
    metrics_from_ranks,
    most_popular,
    streamed_ranks,
    text_only,
)
from models.features import pad_batch
from models.item_index import IndexConfig
from models.losses import SampledSoftmax, excluded_items, full_softmax
from models.network import NetworkConfig, SequenceTransformer, surprise_raw
from models.text import Whitening, item_text_table
from models.text_export import catalog_path_metrics
from models.vocab import Vocab

log = logging.getLogger(__name__)
IGNORE = -100
SCORES_PER_CHUNK = 1 << 24  # item scores alive at once while calibrating surprise (64 MB)


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained: optimisation settings, and the network they train.

    Args:
        epochs (int, 200): upper bound on epochs; early stopping on validation NDCG@10
            usually ends sooner.
        batch_size (int, 128): training windows per optimisation step.
        lr (float, 1e-3): AdamW learning rate.
        weight_decay (float, 0.0): AdamW weight decay.
        patience (int, 15): epochs without a better validation NDCG@10 before stopping.
        weight_average (float | None, None): when set, validate and keep an exponential moving
            average of the weights with this decay per step instead of the raw weights. On
            sparse data the validation curve is noisy around its plateau, and early stopping
            on the raw weights picks a noise peak; the average sits on the plateau.
        seed (int, 0): seeds torch, numpy and the data order, so a run can be repeated.
        max_len (int, 50): most recent events per training window and per scored sequence.
        type_loss_weight (float, 0.5): weight of the next-event-type loss beside the
            next-item loss.
        loss (str, "auto"): next-item loss (models/losses.py): "full" softmax over the
            catalog, "sampled" softmax, or "auto": full up to ``full_softmax_max_items``
            items, sampled beyond.
        negatives (int, 1024): uniformly drawn negatives per step for the sampled loss,
            beside the batch's own targets.
        full_softmax_max_items (int, 10000): largest catalog "auto" trains with the full
            softmax (its cost per step grows with the catalog).
        val_users (int | None, None): early stopping on a seeded sample of this many
            validation users instead of all (a full ranking of a million items per user
            each epoch is the cost that grows); the reported metrics always use every user.
        serving (str, "auto"): how the exported model ranks items: "exact" top-k over the
            whole catalog inside the graph, "candidates" through an item index
            (models/item_index.py), or "auto": exact up to ``exact_serving_max_items``.
        exact_serving_max_items (int, 50000): largest catalog "auto" serves exactly (its cost
            per scored event grows with the catalog: about 0.2 ms at 25,000 items on this CPU).
        index (IndexConfig): how the item index is built and searched.
        progress (bool, True): show a progress bar per epoch.
        network (NetworkConfig, 64 positions): the network's shape and regularisation
            (models/network.py). Its ``n_items`` and ``n_types`` come from the data, and its
            position table is made at least ``max_len`` long; 64 positions by default, so
            the default model is the same size as before the configs were nested.
    """

    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 15
    weight_average: float | None = None
    seed: int = 0
    max_len: int = 50
    type_loss_weight: float = 0.5
    loss: str = "auto"
    negatives: int = 1024
    full_softmax_max_items: int = 10_000
    val_users: int | None = None
    serving: str = "auto"
    exact_serving_max_items: int = 50_000
    index: IndexConfig = field(default_factory=IndexConfig)
    progress: bool = True
    network: NetworkConfig = field(default_factory=lambda: NetworkConfig(max_positions=64))


@dataclass
class UserSeq:
    """One user's sequence as vocabulary indices."""

    user: str
    items: list[int]
    types: list[int]
    ts: list[float]
    fraud: list[float]  # 1 fraud, 0 legit, nan unknown


@dataclass
class Dataset:
    """Everything training and evaluation need, derived once from a History."""

    vocab: Vocab
    users: list[UserSeq]
    text_white: np.ndarray  # [distinct texts + 1, 384]: item i's row is text_of_item[i]
    text_raw: np.ndarray  # the same rows before whitening
    text_of_item: np.ndarray  # [n_items] int64
    history_source: str
    fingerprint: str
    whitening: Whitening | None = None  # None: no item has text

    def train_part(self, hidden: set[int] | None = None) -> list[UserSeq]:
        """Each user's sequence without its last two events, hidden items removed."""
        out = []
        for u in self.users:
            keep = [i for i in range(len(u.items) - 2) if not hidden or u.items[i] not in hidden]
            if keep:
                out.append(
                    UserSeq(
                        u.user,
                        [u.items[i] for i in keep],
                        [u.types[i] for i in keep],
                        [u.ts[i] for i in keep],
                        [u.fraud[i] for i in keep],
                    )
                )
        return out

    def cases(self, which: str) -> list[EvalCase]:
        """Validation (target = second-last) or test (target = last) cases, item targets only."""
        cut = 2 if which == "val" else 1
        out = []
        for u in self.users:
            if len(u.items) < 3:
                continue
            end = len(u.items) - cut
            if u.items[end] <= NO_ITEM:
                continue
            out.append(EvalCase(u.user, u.items[:end], u.types[:end], u.ts[:end], u.items[end]))
        return out


def natural_order(key: str) -> tuple:
    """Sort key: numeric ids in numeric order (MovieLens user 2 before 10), then the rest."""
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def build_dataset(history: History) -> Dataset:
    """Vocabulary (the items of the interactions and of the catalog), per-user index sequences
    and the item text tables."""
    seqs = user_sequences(history.interactions)
    interacted = [x.item_id for x in history.interactions if x.item_id is not None]
    vocab = Vocab.build(interacted + list(history.catalog_items), history.item_text)
    users = []
    for user in sorted(seqs, key=natural_order):
        s = seqs[user]
        users.append(
            UserSeq(
                user,
                [vocab.item_index(x.item_id) for x in s],
                [vocab.type_index(x.type) for x in s],
                [x.ts for x in s],
                [float("nan") if x.fraud is None else float(x.fraud) for x in s],
            )
        )
    known = set(vocab.items)
    item_text = {i: t for i, t in history.item_text.items() if i in known}
    vocab = Vocab(vocab.items, item_text, vocab.types)
    white, raw, of_item, whitening = item_text_table(list(vocab.items), item_text, N_RESERVED_ITEMS)
    return Dataset(
        vocab, users, white, raw, of_item, history.source, history.fingerprint, whitening
    )


def _windows(
    train: list[UserSeq], max_len: int, rng: random.Random
) -> list[tuple[UserSeq, int, int]]:
    """(user, start, end) input windows: the most recent one, then older ones at a random
    stride, so every training event is a target once per epoch."""
    out = []
    for u in train:
        n = len(u.items)
        if n < 2:
            continue
        end = n - 1
        while end > 0:
            out.append((u, max(0, end - max_len), end))
            end -= rng.randint(max_len // 2, max_len)
    return out


def _batches(windows: list, batch_size: int, rng: random.Random) -> list[list]:
    """Shuffled batches of windows of similar length (sorted within pools of 64 batches), so
    a batch is padded to its own longest window, not to ``max_len``: on sparse data, where
    most users have a handful of events, that is most of the work saved."""
    rng.shuffle(windows)
    pool = 64 * batch_size
    batches = []
    for start in range(0, len(windows), pool):
        chunk = sorted(windows[start : start + pool], key=lambda w: w[2] - w[1])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def _window_batch(windows) -> dict[str, torch.Tensor]:
    max_len = max(2, max(e - s for _, s, e in windows))
    inputs = pad_batch(
        [u.items[s:e] for u, s, e in windows],
        [u.types[s:e] for u, s, e in windows],
        [u.ts[s:e] for u, s, e in windows],
        length=max_len,
    )
    batch = {k: torch.from_numpy(v) for k, v in inputs.items()}
    targets = np.full((len(windows), max_len, 3), np.nan)
    for row, (u, s, e) in enumerate(windows):
        n = e - s
        targets[row, max_len - n :, 0] = [
            i if i > NO_ITEM else IGNORE for i in u.items[s + 1 : e + 1]
        ]
        targets[row, max_len - n :, 1] = u.types[s + 1 : e + 1]
        targets[row, max_len - n :, 2] = u.fraud[s + 1 : e + 1]
    item_t = np.nan_to_num(targets[..., 0], nan=IGNORE).astype(np.int64)
    type_t = np.nan_to_num(targets[..., 1], nan=IGNORE).astype(np.int64)
    batch.update(
        item_t=torch.from_numpy(item_t),
        type_t=torch.from_numpy(type_t),
        risk_t=torch.from_numpy(targets[..., 2].astype(np.float32)),
    )
    return batch


def case_arrays(cases: list[EvalCase], max_len: int) -> dict[str, np.ndarray]:
    """Model inputs for evaluation cases: left-padded to the longest, at most ``max_len``."""
    return pad_batch(
        [c.input_items for c in cases],
        [c.input_types for c in cases],
        [c.input_ts for c in cases],
        length=min(max_len, max(len(c.input_items) for c in cases)),
    )


def _case_batch(cases: list[EvalCase], max_len: int) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in case_arrays(cases, max_len).items()}


class ModelScores:
    """Block scorer for :func:`streamed_ranks`: hidden states of one chunk of cases at a time
    (kept while the ranking walks the catalog), dotted with a slice of the item table."""

    def __init__(self, net: SequenceTransformer, cases: list[EvalCase], max_len: int) -> None:
        self.net, self.cases, self.max_len = net, cases, max_len
        self.table = net.item_table()
        self.rows: slice | None = None
        self.hidden = torch.zeros(0)

    def __call__(self, rows: slice, items: slice) -> np.ndarray:
        if rows != self.rows:
            b = _case_batch(self.cases[rows], self.max_len)
            h = self.net.hidden_states(b["item_ids"], b["event_types"], b["time_gaps"])
            self.rows, self.hidden = rows, h[:, -1]
        return (self.hidden @ self.table[items].T).numpy()


@torch.inference_mode()
def surprise_quantiles(net: SequenceTransformer, data: Dataset, max_len: int) -> np.ndarray:
    """1001 quantiles of the raw surprise of normal held-out events: the calibration table.

    Every validation event counts (with or without an item), scored exactly as in serving:
    the event's item and type under the model's prediction from the events before it.
    """
    net.eval()
    table = net.item_table()
    blocked = torch.zeros(net.config.n_items)
    blocked[:N_RESERVED_ITEMS] = MASKED
    rows = [
        (u.items[:-2], u.types[:-2], u.ts[:-2], u.items[-2], u.types[-2])
        for u in data.users
        if len(u.items) >= 3 and u.fraud[-2] != 1.0
    ]
    raws, step = [], max(1, min(512, SCORES_PER_CHUNK // net.config.n_items))
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        arrays = pad_batch(
            [r[0] for r in chunk], [r[1] for r in chunk], [r[2] for r in chunk], length=max_len
        )
        b = {k: torch.from_numpy(v) for k, v in arrays.items()}
        h = net.encode(b["item_ids"], b["event_types"], b["time_gaps"], table)[:, -1]
        items = torch.tensor([r[3] for r in chunk])
        types = torch.tensor([r[4] for r in chunk])
        raws.append(surprise_raw(net, h, table, blocked, items, types).numpy())
    raw = np.concatenate(raws) if raws else np.zeros(1)
    return np.quantile(raw, np.linspace(0.0, 1.0, 1001)).astype(np.float32)


@torch.inference_mode()
def evaluate(net, cases, max_len) -> dict[str, float]:
    """EVAL_PROTOCOL.md metrics, streamed over chunks of users and items."""
    net.eval()
    scores = ModelScores(net, cases, max_len)
    return metrics_from_ranks(streamed_ranks(scores, cases, net.config.n_items))


@dataclass
class TrainResult:
    """A trained network and what happened while training it."""

    net: SequenceTransformer
    best_epoch: int
    curves: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def fit(
    data: Dataset, cfg: TrainConfig, hidden: set[int] | None = None, label: str = "train"
) -> TrainResult:
    """Train with early stopping on validation NDCG@10; returns the best epoch's network."""
    seed_everything(cfg.seed)
    rng = random.Random(cfg.seed)
    train = data.train_part(hidden)
    seen = torch.zeros(data.vocab.n_items)
    for u in train:
        seen[u.items] = 1.0
    seen[:N_RESERVED_ITEMS] = 0.0
    net_cfg = replace(
        cfg.network,
        n_items=data.vocab.n_items,
        n_types=data.vocab.n_types,
        max_positions=max(cfg.max_len, cfg.network.max_positions),
        # without any item text, hiding an ID would leave the item with no vector at all
        id_dropout=cfg.network.id_dropout if data.whitening is not None else 0.0,
    )
    net = SequenceTransformer(
        net_cfg, torch.from_numpy(data.text_white), seen, torch.from_numpy(data.text_of_item)
    )
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    averaged = None
    if cfg.weight_average is not None:
        averaged = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(cfg.weight_average))
    validated = averaged.module if averaged is not None else net
    item_loss = _item_loss(cfg, net, train)
    val_cases = data.cases("val")
    if cfg.val_users is not None and len(val_cases) > cfg.val_users:
        val_cases = random.Random(cfg.seed).sample(val_cases, cfg.val_users)
    type_loss = nn.CrossEntropyLoss(ignore_index=IGNORE)
    curves: dict[str, list[float]] = {"loss": [], "val_ndcg@10": [], "val_hr@10": []}
    best, best_epoch, best_state, began = -1.0, 0, None, time.monotonic()
    bar = tqdm(range(1, cfg.epochs + 1), desc=label, unit="epoch", disable=not cfg.progress)
    for epoch in bar:
        net.train()
        losses = []
        for batch in _batches(_windows(train, cfg.max_len, rng), cfg.batch_size, rng):
            b = _window_batch(batch)
            keep = (torch.rand(net_cfg.n_items) >= net_cfg.id_dropout).float()
            h = net.hidden_states(b["item_ids"], b["event_types"], b["time_gaps"], id_keep=keep)
            has_item = b["item_t"] != IGNORE
            loss = item_loss(h[has_item], b["item_t"][has_item], keep)
            loss = loss + cfg.type_loss_weight * type_loss(
                net.type_head(h).flatten(0, 1), b["type_t"].flatten()
            )
            labelled = ~torch.isnan(b["risk_t"])
            if labelled.any():
                loss = loss + nn.functional.binary_cross_entropy_with_logits(
                    net.risk_head(h).squeeze(-1)[labelled], b["risk_t"][labelled]
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if averaged is not None:
                averaged.update_parameters(net)
            losses.append(loss.item())
        val = evaluate(validated, val_cases, cfg.max_len)
        curves["loss"].append(float(np.mean(losses)))
        curves["val_ndcg@10"].append(val["ndcg@10"])
        curves["val_hr@10"].append(val["hr@10"])
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", val_ndcg=f"{val['ndcg@10']:.4f}")
        if val["ndcg@10"] > best:
            best, best_epoch = val["ndcg@10"], epoch
            best_state = copy.deepcopy(validated.state_dict())
        elif epoch - best_epoch >= cfg.patience:
            break
    bar.close()
    assert best_state is not None
    net.load_state_dict(best_state)
    net.eval()
    return TrainResult(net, best_epoch, curves, time.monotonic() - began)


def _resolve(name: str, choice: str, n_items: int, small: str, big: str, max_small: int) -> str:
    """What an "auto" ``choice`` between ``small`` and ``big`` means for ``n_items`` items."""
    if choice == "auto":
        return small if n_items <= max_small else big
    if choice not in (small, big):
        raise ValueError(f"unknown {name} {choice!r}: use auto, {small} or {big}")
    return choice


def serving_kind(cfg: TrainConfig, n_items: int) -> str:
    """Exact top-k in the graph, or candidates from the item index."""
    return _resolve(
        "serving", cfg.serving, n_items, "exact", "candidates", cfg.exact_serving_max_items
    )


def loss_kind(cfg: TrainConfig, n_items: int) -> str:
    """The full softmax, or the sampled one."""
    return _resolve("loss", cfg.loss, n_items, "full", "sampled", cfg.full_softmax_max_items)


def _item_loss(cfg: TrainConfig, net: SequenceTransformer, train: list[UserSeq]):
    """loss(h [P, d], targets [P], id_keep) for the configured next-item loss."""
    if loss_kind(cfg, net.config.n_items) == "sampled":
        targets = torch.tensor(
            [i for u in train for i in u.items[1:] if i > NO_ITEM], dtype=torch.long
        )
        frequency = torch.bincount(targets, minlength=net.config.n_items).float()
        sampled = SampledSoftmax(frequency, cfg.negatives, torch.Generator().manual_seed(cfg.seed))
        return lambda h, targets, keep: sampled(net, h, targets, keep)
    excluded = excluded_items(net.seen, N_RESERVED_ITEMS)
    return lambda h, targets, keep: full_softmax(h, targets, net.item_table(keep), excluded)


def baselines(data: Dataset, cases: list[EvalCase]) -> dict[str, dict]:
    train_items = [[i for i in u.items if i > NO_ITEM] for u in data.train_part()]
    return {
        "most_popular": most_popular(train_items, cases, data.vocab.n_items),
        "markov": markov(train_items, cases, data.vocab.n_items),
    }


def hidden_items(data: Dataset, share: float, seed: int) -> set[int]:
    """A seeded random share of the items that occur in the sequences, for the cold-start run
    (a catalog item no one has touched is cold already: hiding it would test nothing)."""
    rng = random.Random(seed)
    occurring = {i for u in data.users for i in u.items}
    items = [i for i in range(N_RESERVED_ITEMS, data.vocab.n_items) if i in occurring]
    return set(rng.sample(items, round(share * len(items))))


def cold_start(data: Dataset, cfg: TrainConfig, share: float) -> dict:
    """EVAL_PROTOCOL item 7: hide items from training, score users whose test target is hidden."""
    hidden = hidden_items(data, share, cfg.seed)
    result = fit(data, cfg, hidden, label="cold-start")
    cases = [c for c in data.cases("test") if c.target in hidden]
    model = evaluate(result.net, cases, cfg.max_len)
    text = text_only(data.text_raw, data.text_of_item, cases)
    served = None
    if data.whitening is not None:
        served = catalog_path_metrics(result.net, data, hidden, cases, cfg.max_len)
    return {
        "hidden_share": share,
        "hidden_items": len(hidden),
        "users": len(cases),
        "hr@10": model["hr@10"],
        "ndcg@10": model["ndcg@10"],
        "text_baseline": {"hr@10": text["hr@10"], "ndcg@10": text["ndcg@10"]},
        # the same users with the hidden items' vectors computed through the catalog path
        "through_catalog": served,
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.seconds, 1),
    }


def train_config_dict(cfg: TrainConfig) -> dict:
    d = asdict(cfg)
    d.pop("progress")
    return d
