"""Sentiment of one event, from its rating and review text, in [-1, 1].

The review text goes through a small opinion-word lexicon: the serve-time language model is
issue #15.
"""

from __future__ import annotations

import re

POSITIVE = frozenset(
    """good great excellent amazing love loved perfect best awesome fantastic
wonderful happy recommend nice fast superb brilliant favourite favorite works solid""".split()
)
NEGATIVE = frozenset(
    """bad terrible awful hate hated worst broken poor slow refund disappointed
disappointing useless waste fake scam cheap defective returned boring horrible""".split()
)
_WORD = re.compile(r"[a-z']+")


def text_sentiment(text: str) -> float | None:
    """Lexicon sentiment in [-1, 1] (None when no opinion words): used when no LM is loaded."""
    words = _WORD.findall(text.lower())
    pos = sum(w in POSITIVE for w in words)
    neg = sum(w in NEGATIVE for w in words)
    return None if pos + neg == 0 else (pos - neg) / (pos + neg)


def event_sentiment(rating: float | None, text: str | None) -> float | None:
    """Ratings map 1..5 → -1..1; review text through the lexicon; their mean when both."""
    values = []
    if rating is not None:
        values.append((rating - 3.0) / 2.0)
    if text:
        s = text_sentiment(text)
        if s is not None:
            values.append(s)
    return sum(values) / len(values) if values else None
