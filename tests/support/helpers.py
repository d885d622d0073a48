"""Small real things for tests: a synthetic history and a tiny trained, registered model."""

from __future__ import annotations

import random
from pathlib import Path

from models.data import History, Interaction
from models.network import NetworkConfig
from models.train import TrainConfig

TYPES = ["view", "click", "add_to_cart", "purchase", "rating"]


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
