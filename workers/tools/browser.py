"""The system's Chromium driven by Playwright, for the monitor's browser test and screenshots.

Playwright never downloads a browser here: it drives the Chromium the OS packages
(``apt-get install chromium``), or the one ``FORESIGHT_CHROMIUM`` names. Every request the page
makes to a host other than this machine is refused and recorded, so a test also proves that
the page works offline.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


class BrowserMissing(RuntimeError):
    """No Chromium on this machine."""


def chromium_path() -> str:
    """The Chromium executable: ``FORESIGHT_CHROMIUM``, else ``chromium`` on the PATH."""
    named = os.environ.get("FORESIGHT_CHROMIUM")
    found = named or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found or not os.access(found, os.X_OK):
        raise BrowserMissing(
            "no Chromium found: install Debian's package (apt-get install chromium) or set "
            "FORESIGHT_CHROMIUM to a Chromium executable"
        )
    return found


@dataclass
class BrowsedPage:
    """A page in headless Chromium, with what it tried to fetch from elsewhere and what it
    logged (console errors, uncaught exceptions)."""

    page: Any
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@asynccontextmanager
async def chromium_page(width: int = 1600, height: int = 1200) -> AsyncIterator[BrowsedPage]:
    """A fresh headless Chromium page, closed with its browser on exit."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage"],  # root in a container
        )
        try:
            page = await browser.new_page(viewport={"width": width, "height": height})
            browsed = BrowsedPage(page)

            async def local_only(route: Any) -> None:
                if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
                    await route.continue_()
                else:
                    browsed.refused.append(route.request.url)
                    await route.abort()

            await page.route("**/*", local_only)
            page.on("pageerror", lambda exc: browsed.errors.append(f"uncaught: {exc}"))

            def console(message: Any) -> None:
                if message.type == "error":
                    browsed.errors.append(f"console: {message.text}")

            page.on("console", console)
            yield browsed
        finally:
            await browser.close()


async def screenshot(url: str, out: str, wait_for: str | None, seconds: float) -> list[str]:
    """Save a full-page PNG of ``url`` once ``wait_for`` (a CSS selector) shows, plus
    ``seconds`` for live updates; returns the requests refused and errors logged."""
    async with chromium_page() as browsed:
        await browsed.page.goto(url)
        if wait_for:
            await browsed.page.wait_for_selector(wait_for, timeout=60_000)
        await asyncio.sleep(seconds)
        await browsed.page.screenshot(path=out, full_page=True)
        return browsed.refused + browsed.errors
