"""Small real things for tests: a synthetic history and a tiny trained, registered model."""

from __future__ import annotations

import itertools
import os
import random
from pathlib import Path

from models.data import History, Interaction
from models.network import NetworkConfig
from models.train import TrainConfig

TYPES = ["view", "click", "add_to_cart", "purchase", "rating"]
# read in place from ../shared/data (never copied into the repository)
ML100K = Path(
    os.environ.get("FORESIGHT_ML100K", Path(__file__).resolve().parents[3] / "shared/data/ml-100k")
)


def synthetic_history(
    users: int = 40, items: int = 30, length: int = 12, seed: int = 0, fraud_users: int = 0
) -> History:
    """Users walk a ring of items (item k is followed by k+1), so order is learnable."""
    rng = random.Random(seed)
    out = []
    for u in range(users):
        start, ts = rng.randrange(items), 1_700_000_000.0 + u
        fraud = u < fraud_users
        for step in range(length):
            ts += rng.choice([5, 30, 600])
            etype = "payment" if fraud else TYPES[step % len(TYPES)]
            out.append(
                Interaction(
                    f"u{u}",
                    f"{(start + step) % items}",
                    etype,
                    ts,
                    f"e{u}-{step}",
                    fraud if fraud_users else None,
                )
            )
    return History(out, {}, "synthetic", f"seed{seed}")


def fraud_pattern_events(start: float, seed: int = 4) -> list[dict]:
    """Ten normal shoppers walking the item ring with mixed event types, and ``fraudster``
    paying over and over: what a model trained on ``synthetic_history(fraud_users=...)`` flags."""
    rng = random.Random(seed)
    events, t = [], start
    for step in range(12):
        for u in range(10):
            t += 1
            events.append(
                {
                    "event_id": f"n{u}-{step}",
                    "user_id": f"normal{u}",
                    "type": TYPES[step % 5],
                    "ts": t,
                    "item_id": str((u * 3 + step) % 30),
                }
            )
        t += 1
        events.append(
            {
                "event_id": f"f-{step}",
                "user_id": "fraudster",
                "type": "payment",
                "ts": t,
                "item_id": str(rng.randrange(30)),
                "price": 1.0,
            }
        )
    return events


def tiny_config(**overrides) -> TrainConfig:
    shape: dict = dict(hidden=16, layers=1, heads=2, max_positions=64, top_k=5)
    base: dict = dict(epochs=3, max_len=10, batch_size=32, patience=3, progress=False)
    for name, value in overrides.items():
        (shape if name in NetworkConfig.__dataclass_fields__ else base)[name] = value
    return TrainConfig(network=NetworkConfig(**shape), **base)


def tiny_model(registry: Path, **overrides) -> str:
    """Train and register a tiny model; returns its version."""
    from models.pipeline import train_and_register

    version, _ = train_and_register(
        synthetic_history(), registry, tiny_config(**overrides), cold_start_share=None
    )
    return version


POSITIVE_WORDS = ["wonderful", "delightful", "superb", "charming", "moving", "brilliant"]
NEGATIVE_WORDS = ["dreadful", "tedious", "clumsy", "lifeless", "painful", "dull"]
SUBJECTS = ["the film", "this phone", "the story", "her performance", "the lamp", "our stay"]


def labelled_sentences(directory: Path, n_train: int = 240, n_dev: int = 60) -> Path:
    """``train.tsv`` and ``dev.tsv`` of generated, clearly labelled sentences (the real SST-2
    is only read from ../shared/data, never copied into tests)."""
    rng = random.Random(7)
    directory.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        lines = ["label\tsentence"]
        for i in range(n):
            label = i % 2
            word = rng.choice(POSITIVE_WORDS if label else NEGATIVE_WORDS)
            adverb = rng.choice(["truly", "just", "so"])
            lines.append(f"{label}\t{rng.choice(SUBJECTS)} was {word} , {adverb} {word}")
        (directory / name).write_text("\n".join(lines) + "\n")
    return directory


def tiny_sentiment(directory: Path):
    """A SentimentSource that fine-tunes one MiniLM layer on generated sentences (seconds)."""
    from models.sentiment import SentimentConfig
    from models.sentiment_artifact import SentimentSource

    config = SentimentConfig(
        layers=1, epochs=3, batch_size=16, lr=2e-4, eval_every=15, max_tokens=32
    )
    return SentimentSource(labelled_sentences(directory), config)


TITLE_WORDS = {
    "jazz": (
        ["live", "classic", "modern", "rare", "remastered", "smooth"],
        ["jazz piano trio", "jazz saxophone quartet", "bebop trumpet", "jazz guitar",
         "swing big band", "jazz vocal standards"],
        ["album", "vinyl record", "cd", "box set"],
    ),
    "garden": (
        ["sturdy", "compact", "large", "durable", "lightweight", "green"],
        ["garden hose", "lawn mower", "garden shears", "watering can", "compost bin",
         "flower bed edging"],
        ["for the garden", "for lawns", "for flower beds", "for the backyard"],
    ),
    "kitchen": (
        ["stainless", "non-stick", "professional", "compact", "cast iron", "ceramic"],
        ["chef knife", "frying pan", "kitchen scale", "mixing bowl", "saucepan", "baking tray"],
        ["for the kitchen", "for cooking", "for baking", "for home chefs"],
    ),
    "running": (
        ["breathable", "lightweight", "reflective", "cushioned", "waterproof", "compression"],
        ["running shoes", "running socks", "running jacket", "running tights",
         "hydration vest", "running cap"],
        ["for trail runs", "for marathons", "for joggers", "for runners"],
    ),
}  # fmt: skip


def worded_topics() -> tuple[dict[str, list[str]], dict[str, str]]:
    """(24 titles a topic, one title a topic left out): every title combines an adjective, a
    product and a use of its topic, so a left-out title is a new item whose close neighbours
    in text the catalog holds. (A few hand-written titles a topic are too few for the text
    path to generalise to a new one.)"""
    topics, left_out = {}, {}
    for topic, words in TITLE_WORDS.items():
        titles = [" ".join(w) for w in itertools.product(*words)]
        *topics[topic], left_out[topic] = random.Random(topic).sample(titles, 25)
    return topics, left_out


def topical_history(
    topics: dict[str, list[str]], users: int = 48, length: int = 10, seed: int = 0
) -> History:
    """Users who stay within one topic of ``topics`` (topic → item titles): what text can
    carry."""
    rng = random.Random(seed)
    item_text, by_topic = {}, {}
    for topic, titles in topics.items():
        by_topic[topic] = [f"{topic}-{n}" for n in range(len(titles))]
        item_text.update(zip(by_topic[topic], titles, strict=True))
    out = []
    for u in range(users):
        topic = list(topics)[u % len(topics)]
        ts = 1_700_000_000.0 + u
        for step in range(length):
            ts += rng.choice([5, 30, 600])
            item = rng.choice(by_topic[topic])
            out.append(Interaction(f"u{u}", item, TYPES[step % 4], ts, f"e{u}-{step}", None))
    return History(out, item_text, "topical", f"topical{seed}")
