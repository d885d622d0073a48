"""Review text for the bench's with/without-text comparison (``foresight bench --text-share``).

The same generated events twice: once with no text at all, once with a share of them turned
into reviews of 20-60 words, so the two pipeline runs differ only in the text the language
model has to read.
"""

from __future__ import annotations

import random

OPINION = (
    "great excellent disappointing awful lovely sturdy flimsy comfortable useless perfect cheap "
    "overpriced reliable broken beautiful noisy quiet fast slow recommend regret happy annoyed"
).split()
FILLER = (
    "the it this was is and but with for after a my i we they very quite really not so too "
    "delivery box price size colour battery quality screen order week day fit material"
).split()


def review(rng: random.Random) -> str:
    """20-60 words, about one in four an opinion word."""
    words = [
        rng.choice(OPINION) if rng.random() < 0.25 else rng.choice(FILLER)
        for _ in range(rng.randint(20, 60))
    ]
    return " ".join(words).capitalize() + "."


def without_text(events: list[dict]) -> list[dict]:
    """A copy of ``events`` with every ``text`` removed."""
    return [{k: v for k, v in e.items() if k != "text"} for e in events]


def with_reviews(events: list[dict], share: float, seed: int = 11) -> tuple[list[dict], list[dict]]:
    """(without text, with text): ``share`` of the events become reviews (type ``review``) in
    both; only the second gives them their 20-60 words."""
    rng = random.Random(seed)
    plain = without_text(events)
    texted = []
    for event in plain:
        if rng.random() < share:
            event["type"] = "review"
            texted.append({**event, "text": review(rng)})
        else:
            texted.append(event)
    return plain, texted
