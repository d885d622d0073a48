"""The monitor page in a real browser: broker, worker and monitor running, labelled traffic
replayed after the page is open, and Debian's headless Chromium (driven by Playwright, no browser
download) watching trends, their sentiment and a fraud alert arrive live. Review text with
markup must show as text and never run."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from pathlib import Path

from models import registry
from schemas.settings import Settings
from tests.conftest import _free_port_pair
from tests.support.helpers import (
    NEGATIVE_WORDS,
    POSITIVE_WORDS,
    fraud_pattern_events,
    synthetic_history,
    tiny_config,
    tiny_sentiment,
)
from tests.support.worker_harness import TopicReader, keyed, produce
from workers.kafka.topics import create_topics
from workers.tools.browser import chromium_page
from workers.tools.worker_processes import MonitorProcess, WorkerProcess

MARKUP = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> dreadful'
APPEAR_MS = 30_000
"""How long (ms) the page may take to show what the worker published: seconds, not minutes."""


async def until(page, expression: str, timeout: float) -> None:
    """Poll ``expression`` in the page until it is true. (Playwright's wait_for_function
    evaluates strings with eval, which the page's Content-Security-Policy rightly refuses.)"""
    deadline = time.monotonic() + timeout / 1000
    while not await page.evaluate(expression):
        if time.monotonic() > deadline:
            shown = await page.inner_text("body")
            raise AssertionError(f"not true within {timeout / 1000:.0f}s: {expression}\n{shown}")
        await asyncio.sleep(0.2)


def _traffic(settings: Settings) -> list[dict]:
    """Per trend window, praise for item ``liked`` and complaints about ``hated``; one review
    with markup for item ``xss``; a fraudster paying over and over among normal shoppers."""
    width = settings.trend_window_seconds
    start = 1_750_000_000 // width * width
    events: list[dict] = []
    for w in range(5):
        for k in range(4):
            ts = start + w * width + 10 + k * 30
            for item, text in (
                ("liked", f"the film was {POSITIVE_WORDS[k]} , truly {POSITIVE_WORDS[k]}"),
                ("hated", f"the story was {NEGATIVE_WORDS[k]} , so {NEGATIVE_WORDS[k]}"),
            ):
                events.append(
                    {
                        "event_id": f"{item}-{w}-{k}",
                        "user_id": f"{item}-fan{k}",
                        "type": "review",
                        "ts": ts,
                        "item_id": item,
                        "text": text,
                        "attrs": {"category": "films"},
                    }
                )
    events.append(
        {
            "event_id": "xss-review",
            "user_id": "mallory",
            "type": "review",
            "ts": start + width + 5,
            "item_id": "xss",
            "text": MARKUP,
        }
    )
    events += fraud_pattern_events(float(start))
    return sorted(events, key=lambda e: e["ts"])


async def test_monitor_page_shows_trends_sentiment_and_a_fraud_alert_live(
    settings: Settings, tmp_path: Path, tmp_path_factory
) -> None:
    from models.pipeline import train_and_register

    s = settings.model_copy(
        update={
            "anomaly_alerts": False,
            "risk_threshold": 0.5,
            "metrics_port": _free_port_pair(),
            "sweep_interval_seconds": 2.0,  # quiet keys' windows close on the sweep
        }
    )
    version, _ = train_and_register(
        synthetic_history(users=60, fraud_users=15, length=12, seed=2),
        s.registry,
        tiny_config(epochs=15, hidden=32),
        cold_start_share=None,
        sentiment=tiny_sentiment(tmp_path_factory.getbasetemp() / "sentences"),
    )
    registry.mark_current(s.registry, version)
    await create_topics(s)
    events = _traffic(s)
    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    metrics = [f"http://127.0.0.1:{s.metrics_port}/metrics"]
    monitor = MonitorProcess(s, tmp_path / "monitor.log", _free_port_pair(), metrics).start()
    try:
        monitor.wait_ready()
        async with chromium_page() as browsed:
            page = browsed.page
            await page.goto(monitor.url)  # open before any traffic: what follows comes live
            await page.wait_for_selector("#connection[data-state=live]", timeout=APPEAR_MS)
            assert await page.locator("tr.trend").count() == 0

            await produce(s, s.topic("events"), keyed(events))
            began = time.monotonic()

            # trends with their sentiment, from the LM sentiment model
            liked = page.locator('tr.trend[data-key="item:liked"]')
            hated = page.locator('tr.trend[data-key="item:hated"]')
            await liked.wait_for(timeout=APPEAR_MS)
            await hated.wait_for(timeout=APPEAR_MS)
            assert (await liked.locator("td.sentiment").inner_text()).startswith("+")
            assert (await hated.locator("td.sentiment").inner_text()).startswith("-")
            category = page.locator('tr.trend[data-key="category:films"]')
            await category.wait_for(timeout=APPEAR_MS)

            # the fraud alert with its reasons and model version
            fraud = page.locator('tr.alert[data-kind="fraud_risk"]', has_text="fraudster")
            await fraud.first.wait_for(timeout=APPEAR_MS)
            row = await fraud.first.inner_text()
            assert "payment" in row and "price 1" in row and version in row
            shown_within = time.monotonic() - began
            await page.fill("#alert-user", "fraud")  # the feed filters by user
            await until(
                page,
                "[...document.querySelectorAll('tr.alert td.user')].map(td => td.textContent)"
                ".join() === 'fraudster'",  # one alert: the cooldown holds the rest
                timeout=APPEAR_MS,
            )

            # the workers' figures: model version, throughput, latency
            await until(
                page, "document.getElementById('m-p99').textContent.endsWith('ms')", APPEAR_MS
            )
            assert await page.inner_text("#model-version") == version
            assert await page.inner_text("#m-workers") == "1 / 1"
            await until(
                page, "document.getElementById('m-lag').title.includes('partition 3')", APPEAR_MS
            )

            # filter, select, and read the texts behind a trend: markup shows as text
            await page.fill("#trend-filter", "xss")
            await until(
                page,
                "[...document.querySelectorAll('tr.trend')].map(r => r.dataset.key).join() "
                "=== 'item:xss'",
                timeout=APPEAR_MS,
            )
            await page.click('tr.trend[data-key="item:xss"]')
            texts = page.locator("#texts li")
            await texts.first.wait_for(timeout=APPEAR_MS)
            assert MARKUP in await page.inner_text("#texts")
            assert await page.evaluate("window.__pwned") is None
            assert await page.locator("#texts script, #texts img, main script").count() == 0
            assert await page.locator("#sentiment-chart canvas").count() == 1

            # the trend table sorts: by volume, largest first
            await page.fill("#trend-filter", "")
            await page.click('th[data-sort="volume"]')
            await until(
                page,
                "document.querySelector('th.sorted')?.dataset.sort === 'volume' && "
                "document.querySelector('tr.trend')?.dataset.key === 'category:films'",
                timeout=APPEAR_MS,
            )
            await page.click('tr.trend[data-key="item:hated"]')
            await page.locator("#texts li").first.wait_for(timeout=APPEAR_MS)
            shot = tmp_path / "monitor.png"
            await page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("FORESIGHT_SCREENSHOT_DIR"):
                shutil.copy(shot, Path(os.environ["FORESIGHT_SCREENSHOT_DIR"]) / shot.name)
            assert browsed.refused == [], "the page asked for something not on this machine"
            assert browsed.errors == [], browsed.errors

            # SIGTERM with the page's stream open: the monitor ends it and exits cleanly,
            # and the page says it lost the connection
            monitor.stop(timeout=15)  # SIGKILL after that
            assert monitor.proc is not None
            # uvicorn re-raises the SIGTERM it handled once it has shut down
            assert monitor.proc.returncode in (0, -signal.SIGTERM), monitor.tail()
            assert "graceful shutdown exceeded" not in monitor.tail()
            await page.wait_for_selector("#connection[data-state=down]", timeout=10_000)
        async with TopicReader(s, s.topic("predictions")) as preds:
            await preds.until(lambda r: len(r) >= len(events), 60, [worker])
    finally:
        monitor.stop()
        worker.stop()
    assert shot.stat().st_size > 10_000
    print(f"the page showed the trends and the fraud alert {shown_within:.1f}s after the replay")
    assert shown_within < APPEAR_MS / 1000
