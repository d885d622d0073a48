"""The monitor's web app: one page, its static files, and its data as JSON and as a stream of
server-sent events. Read-only by construction: every route answers GET (and HEAD) only.

Safety: event text and ids are user input. The page writes every value with ``textContent``
(never as markup), and every response carries a Content-Security-Policy that allows only this
origin's own scripts, so markup that slipped through would still not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.settings import Settings
from workers.monitor.feeds import FeedStatus, follow_topics, scrape_metrics
from workers.monitor.state import MonitorState, ViewQuery
from workers.monitor.worker_metrics import WorkerMetrics

STATIC = Path(__file__).with_name("static")
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response (static files included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)


class Monitor:
    """The monitor's state, feeds and routes for one set of topics and workers."""

    def __init__(
        self,
        settings: Settings,
        metrics_urls: list[str],
        backlog: int = 2000,
        push_every: float = 1.0,
        state: MonitorState | None = None,
    ) -> None:
        self.settings = settings
        self.state = state or MonitorState()
        self.metrics = WorkerMetrics(metrics_urls)
        self.status = FeedStatus()
        self.backlog, self.push_every = backlog, push_every
        self.stopping: Callable[[], bool] = lambda: False  # the server sets it: open streams end

    def payload(self, query: ViewQuery) -> bytes:
        """Everything the page renders for ``query``, as JSON."""
        view: dict[str, Any] = self.state.view(query)
        view.update(
            now=time.time(),
            metrics=self.metrics.current,
            throughput=list(self.metrics.history),
            status=self.status.lines,
            topics=[self.settings.topic("trends"), self.settings.topic("alerts")],
        )
        return orjson.dumps(view)

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})

    async def view(self, request: Request) -> Response:
        body = self.payload(ViewQuery.parse(request.query_params))
        return Response(body, media_type="application/json")

    async def stream(self, request: Request) -> Response:
        """Server-sent events: the view for the page's query every ``push_every`` seconds."""
        query = ViewQuery.parse(request.query_params)

        async def events() -> AsyncIterator[bytes]:
            while not self.stopping() and not await request.is_disconnected():
                yield b"data: " + self.payload(query) + b"\n\n"
                await asyncio.sleep(self.push_every)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(
                follow_topics(self.settings, self.state, self.status, self.backlog)
            ),
            asyncio.create_task(scrape_metrics(self.metrics, self.status, every=1.0)),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def app(self) -> ASGIApp:
        routes = [
            Route("/", self.index, methods=["GET"]),
            Route("/api/view", self.view, methods=["GET"]),
            Route("/stream", self.stream, methods=["GET"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
        return SecurityHeaders(Starlette(routes=routes, lifespan=self.lifespan))


def run_monitor(monitor: Monitor, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn handles both and stops cleanly)."""
    config = uvicorn.Config(
        monitor.app(),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,  # should a stream not end at once
    )
    server = uvicorn.Server(config)
    monitor.stopping = lambda: server.should_exit  # set on SIGINT/SIGTERM
    server.run()
