"""When a scored event raises an alert: thresholds plus a per-user, per-kind cooldown."""

from __future__ import annotations

from schemas.records import AlertKind


class AlertPolicy:
    """Thresholds plus a per-user, per-kind cooldown, so one incident is one alert.

    The anomaly alert (label-free surprise) can be switched off; the risk alert cannot, as it
    is the one fraud teams subscribe to.
    """

    def __init__(
        self,
        risk_threshold: float,
        surprise_threshold: float,
        cooldown: float,
        anomaly_enabled: bool = True,
    ) -> None:
        self.risk_threshold = risk_threshold
        self.surprise_threshold = surprise_threshold
        self.cooldown = cooldown
        self.anomaly_enabled = anomaly_enabled
        self._last: dict[tuple[str, AlertKind], float] = {}

    def decide(
        self, user: str, risk: float, surprise: float, now: float
    ) -> list[tuple[AlertKind, float, float]]:
        """(kind, score, threshold) for each alert to raise now; starts their cooldowns."""
        over = []
        if risk >= self.risk_threshold:
            over.append((AlertKind.FRAUD_RISK, risk, self.risk_threshold))
        if self.anomaly_enabled and surprise >= self.surprise_threshold:
            over.append((AlertKind.ANOMALY, surprise, self.surprise_threshold))
        fired = []
        for kind, score, threshold in over:
            last = self._last.get((user, kind))
            if last is None or now - last >= self.cooldown:
                self._last[(user, kind)] = now
                fired.append((kind, score, threshold))
        return fired

    def prune(self, now: float) -> None:
        """Forget cooldowns that have run out, so the map holds only recent alerters."""
        self._last = {k: t for k, t in self._last.items() if now - t < self.cooldown}
