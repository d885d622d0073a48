"""Synthetic e-commerce traffic, deterministic by seed, with labelled fraud patterns.

Normal users come back in sessions that follow a browse → cart → purchase funnel over a
popularity-skewed catalogue, more often in the evening than at night, and sometimes rate or
review what they bought. At a chosen rate, users instead follow one of four fraud patterns:
account takeover, card testing, scraping, promo abuse. Labels (per event) go to a separate file.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

CATEGORIES = ("electronics", "books", "fashion", "home", "toys", "sports", "beauty", "garden")
ADJECTIVES = (
    "classic",
    "compact",
    "deluxe",
    "eco",
    "smart",
    "vintage",
    "pro",
    "mini",
    "ultra",
    "soft",
    "rugged",
    "bright",
)
NOUNS = {
    "electronics": ("headphones", "charger", "speaker", "camera", "monitor", "keyboard"),
    "books": ("novel", "cookbook", "atlas", "biography", "thriller", "poetry collection"),
    "fashion": ("jacket", "sneakers", "scarf", "dress", "backpack", "watch"),
    "home": ("lamp", "kettle", "blanket", "mug set", "vacuum", "pillow"),
    "toys": ("puzzle", "robot kit", "plush bear", "board game", "kite", "train set"),
    "sports": ("yoga mat", "football", "bike helmet", "dumbbells", "tent", "running shoes"),
    "beauty": ("face cream", "perfume", "shampoo", "lipstick", "hair dryer", "soap set"),
    "garden": ("hose", "seed pack", "planter", "shears", "bird feeder", "lawn chair"),
}
GOOD = (
    "great quality, love it",
    "works perfectly, recommend",
    "excellent value, fast delivery",
    "nice and solid, happy with it",
)
BAD = (
    "broken on arrival, terrible",
    "poor quality, want a refund",
    "disappointed, cheap and slow",
    "awful, stopped working",
)
COUNTRIES = ("DE", "FR", "GB", "US", "NL", "ES", "IT", "SE")
FRAUD_PATTERNS = ("account_takeover", "card_testing", "scraping", "promo_abuse")


@dataclass(frozen=True)
class Item:
    item_id: str
    title: str
    category: str
    price: float

    def catalog_row(self) -> dict:
        """The item as a catalog file row (schemas.records.CatalogItem)."""
        return {
            "item_id": self.item_id,
            "title": self.title,
            "category": self.category,
            "attrs": {"price": self.price},
        }


def catalogue(n_items: int, rng: random.Random) -> list[Item]:
    items = []
    for i in range(n_items):
        category = CATEGORIES[i % len(CATEGORIES)]
        title = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS[category])}"
        price = round(math.exp(rng.uniform(math.log(5), math.log(800))), 2)
        items.append(Item(f"p{i}", title, category, price))
    return items


class Generator:
    """Yields (event, label) pairs in time order; ``label`` is the fraud pattern or None."""

    def __init__(
        self,
        users: int = 2_000,
        items: int = 500,
        fraud_rate: float = 0.02,
        seed: int = 0,
        start_ts: float = 1_767_225_600.0,
    ) -> None:
        self.rng = random.Random(seed)
        self.items = catalogue(items, self.rng)
        weights = [1.0 / (rank + 1) ** 1.1 for rank in range(items)]  # Zipf popularity
        # cumulative once: choices() would otherwise sum the whole catalogue on every draw
        self.cum_weights = list(itertools.accumulate(weights))
        self.users = [f"user{u}" for u in range(users)]
        self.home = {
            u: (self.rng.choice(COUNTRIES), f"dev{self.rng.getrandbits(32):08x}")
            for u in self.users
        }
        self.fraud_rate = fraud_rate
        self.ts = start_ts
        self.counter = 0

    def _id(self) -> str:
        self.counter += 1
        return f"g{self.counter}"

    def _event(self, user: str, etype: str, item: Item | None = None, **extra) -> dict:
        country, device = extra.pop("where", self.home[user])
        ev = {
            "event_id": self._id(),
            "user_id": user,
            "type": etype,
            "ts": round(self.ts, 3),
            "country": country,
            "device_id": device,
            **extra,
        }
        if item is not None:
            ev["item_id"] = item.item_id
            ev["attrs"] = {"title": item.title, "category": item.category}
        return ev

    def _tick(self, mean_gap: float) -> None:
        hour = (self.ts % 86_400) / 3_600
        busy = 0.6 + 0.4 * math.sin((hour - 9) / 24 * 2 * math.pi)  # evening peak, night lull
        self.ts += self.rng.expovariate(1.0 / (mean_gap / max(busy, 0.2)))

    def _pick(self) -> Item:
        return self.rng.choices(self.items, cum_weights=self.cum_weights)[0]

    def session(self, user: str) -> Iterator[dict]:
        rng = self.rng
        yield self._event(user, "login")
        focus = self._pick()
        for _ in range(rng.randint(1, 8)):
            self._tick(20)
            item = focus if rng.random() < 0.4 else self._pick()
            yield self._event(user, rng.choice(("view", "view", "click")), item)
            if rng.random() < 0.25:
                self._tick(15)
                yield self._event(
                    user, "add_to_cart", item, price=item.price, quantity=1, currency="EUR"
                )
                if rng.random() < 0.5:
                    self._tick(40)
                    yield self._event(
                        user, "purchase", item, price=item.price, quantity=1, currency="EUR"
                    )
                    yield self._event(user, "payment", None, price=item.price, currency="EUR")
                    if rng.random() < 0.3:
                        self._tick(60)
                        happy = rng.random() < 0.75
                        yield self._event(
                            user,
                            "review",
                            item,
                            rating=rng.choice((4, 5) if happy else (1, 2)),
                            text=rng.choice(GOOD if happy else BAD),
                        )
        if rng.random() < 0.2:
            self._tick(10)
            yield self._event(user, "search", None, text=rng.choice(NOUNS[focus.category]))

    def _purchase(self, user: str, item: Item, **extra) -> dict:
        return self._event(user, "purchase", item, price=item.price, currency="EUR", **extra)

    def fraud(self, user: str, pattern: str) -> Iterator[dict]:
        rng = self.rng
        if pattern == "account_takeover":
            where = (
                rng.choice([c for c in ("BR", "NG", "RU", "VN")]),
                f"dev{rng.getrandbits(32):08x}",
            )
            yield self._event(user, "login", where=where)
            for _ in range(rng.randint(3, 6)):
                self._tick(4)
                item = max(rng.sample(self.items, 5), key=lambda it: it.price)
                yield self._purchase(user, item, quantity=1, where=where)
                yield self._event(
                    user, "payment", None, price=item.price, currency="EUR", where=where
                )
        elif pattern == "card_testing":
            for _ in range(rng.randint(8, 15)):
                self._tick(2)
                yield self._event(
                    user, "payment", None, price=round(rng.uniform(0.5, 2), 2), currency="EUR"
                )
        elif pattern == "scraping":
            for _ in range(rng.randint(30, 60)):
                self._tick(0.5)
                yield self._event(user, "view", rng.choice(self.items))
        else:  # promo abuse: fresh accounts, the same promo, a cheap purchase each
            yield self._event(user, "signup")
            for _ in range(rng.randint(2, 4)):
                self._tick(5)
                item = min(rng.sample(self.items, 5), key=lambda it: it.price)
                attrs = {"promo": "WELCOME10", "title": item.title, "category": item.category}
                yield self._purchase(user, item, attrs=attrs)

    def events(self, n: int) -> Iterator[tuple[dict, str | None]]:
        """Exactly ``n`` events with their labels (None = legitimate)."""
        produced = 0
        while produced < n:
            user = self.rng.choice(self.users)
            self._tick(3)
            stream: Iterator[tuple[dict, str | None]]
            if self.rng.random() < self.fraud_rate:
                pattern = self.rng.choice(FRAUD_PATTERNS)
                stream = ((e, pattern) for e in self.fraud(user, pattern))
            else:
                stream = ((e, None) for e in self.session(user))
            for pair in stream:
                yield pair
                produced += 1
                if produced >= n:
                    return
