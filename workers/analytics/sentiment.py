"""The fallback sentiment of a text, for artifacts trained without a sentiment model.

Artifacts trained with ``foresight train --sentiment DIR`` carry a fine-tuned language model
(models/sentiment.py) and every text is scored by it. An artifact without one (trained before
it existed, or without labelled sentences) still gives trends a sentiment through this small
opinion-word lexicon, which has an opinion on about one sentence in six: the manifest says which
of the two served a prediction (``sentiment`` in the manifest, or not). There is no third path.
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


def lexicon_sentiment(text: str) -> float | None:
    """Lexicon sentiment in [-1, 1]; None when the text has no opinion words."""
    words = _WORD.findall(text.lower())
    pos = sum(w in POSITIVE for w in words)
    neg = sum(w in NEGATIVE for w in words)
    return None if pos + neg == 0 else (pos - neg) / (pos + neg)
