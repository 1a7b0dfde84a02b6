"""The dashboard's web application: pages rendered on the server, kept live over SSE.

Every page is a view: a function from the request's query to a template's context.
A page's changing part is a fragment template of its own; the page opens an SSE
stream (``/live/<page>?<same query>``) that renders the same view again every
``REFRESH`` seconds and sends the fragment when it changed, and htmx's SSE extension
swaps it in. So a page is current without a reload, and the HTML it shows is made by
one template whether it comes with the page or over the stream.

Everything is read through naq's read API (``naq.producer.info``,
``naq.producer.failed``, ``naq.producer.schedules``), page by page: no view reads a
whole stream (see ``naq.transport.streams.page_back``).

Actions (``--admin`` only) go through a confirmation page, then a POST checked for
its CSRF field (``naq.dashboard.guard``); without ``--admin`` no action is shown and
every POST is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jinja2
import nats.errors
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from naq.dashboard import guard as guards
from naq.dashboard.live import CHART_HEIGHT, CHART_WIDTH, Rates
from naq.dashboard.show import Redactor, load_redactor, show_call, show_value
from naq.errors import ConfigurationError, JobNotFound, NaqError
from naq.job import validate_job_id
from naq.producer import failed as failed_api, info, schedules
from naq.producer.api import close_connections, fetch_job_status
from naq.settings import Settings, validate_name
from naq.supervised import finish, keep_running

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
VENDOR = HERE / "static" / "vendor"
ASSETS = ("htmx.min.js", "sse.js")
REFRESH = 1.0
"""Seconds between renders of a live fragment."""
PAGE = 50
STATES = ("waiting", "scheduled", "running", "finished", "failed", "cancelled")


def missing_assets() -> list[str]:
    """The front-end files the build should have put in the package, if any is missing."""
    return [name for name in ASSETS if not (VENDOR / name).is_file()]


@dataclass
class Dashboard:
    """What every view needs: where to read, whether actions are on, how to mask."""

    settings: Settings
    redactor: Redactor
    rates: Rates

    @property
    def admin(self) -> bool:
        return self.settings.dashboard_admin

    @property
    def target(self) -> dict[str, Any]:
        return {"nats_url": self.settings.nats_url, "namespace": self.settings.namespace}


View = Callable[[Dashboard, dict[str, str]], Awaitable[dict[str, Any]]]


def _when(value: float | None) -> str:
    if not value:
        return ""
    return datetime.datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def _ago(value: float | None) -> str:
    if not value:
        return ""
    delta = time.time() - value
    future = delta < 0
    delta = abs(delta)
    text = (
        f"{delta:.0f}s"
        if delta < 90
        else f"{delta / 60:.0f}m"
        if delta < 5400
        else f"{delta / 3600:.1f}h"
        if delta < 172800
        else f"{delta / 86400:.0f}d"
    )
    return f"in {text}" if future else f"{text} ago"


def _size(value: int | None) -> str:
    number = float(value or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if number < 1024 or unit == "GiB":
            return f"{number:.0f} {unit}" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1024
    return ""


def _query(params: dict[str, Any], **changes: Any) -> str:
    merged = {**params, **changes}
    return urlencode({k: v for k, v in merged.items() if v not in (None, "")})


templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,  # everything user-supplied is escaped, whatever the file is named
)
templates.filters.update(when=_when, ago=_ago, size=_size)
templates.globals.update(
    query=_query, chart_width=CHART_WIDTH, chart_height=CHART_HEIGHT, states=STATES
)


def _name(params: dict[str, str], key: str) -> str | None:
    value = params.get(key) or None
    return None if value is None else validate_name("queue", value)


def _int(params: dict[str, str], key: str) -> int | None:
    value = params.get(key)
    if not value:
        return None
    if not value.isdigit():
        raise ConfigurationError(f"{key} must be a number")
    return int(value)


# -- views --------------------------------------------------------------------------


async def overview(dash: Dashboard, params: dict[str, str]) -> dict[str, Any]:
    queues = await info.queues_info(**dash.target)
    workers = await info.list_workers(**dash.target)
    leader = await info.current_leader(**dash.target)
    durable = await info.durable_queues(**dash.target)
    recurring = await schedules.list_schedules(**dash.target)
    charts = {q.name: dash.rates.chart(q.name) for q in queues}
    return {
        "queues": queues,
        "charts": charts,
        "supervisors": [w for w in workers if w.get("role") != "scheduler"],
        "schedulers": [w for w in workers if w.get("role") == "scheduler"],
        "leader": leader,
        "durable": durable,
        "recurring": len(recurring),
    }


async def jobs(dash: Dashboard, params: dict[str, str]) -> dict[str, Any]:
    state = params.get("state") or "waiting"
    if state not in STATES:
        raise ConfigurationError(f"state must be one of {', '.join(STATES)}")
    queue = _name(params, "queue")
    function = params.get("function") or None
    cursor = _int(params, "cursor")
    rows: list[dict[str, Any]] = []
    next_cursor: int | None = None
    if state in ("waiting", "scheduled"):
        stored, next_cursor = await info.stored_jobs_page(
            queue,
            delayed=state == "scheduled",
            function=function,
            after=cursor or 0,
            limit=PAGE,
            **dash.target,
        )
        rows = [
            {
                "job_id": job.job_id,
                "function": job.function,
                "queue": job.queue,
                "when": job.enqueued_at,
                "due": job.due,
                "seq": job.seq,
            }
            for job in stored
        ]
        if len(stored) < PAGE:
            next_cursor = None
    elif state == "running":
        for worker in await info.list_workers(**dash.target):
            for run in worker.get("running", ()):
                if (queue is None or run.get("queue") == queue) and (
                    function is None or run.get("function") == function
                ):
                    rows.append(
                        {
                            "job_id": run.get("job_id"),
                            "function": run.get("function"),
                            "queue": run.get("queue"),
                            "when": run.get("started_at"),
                            "worker": worker.get("id"),
                            "attempt": run.get("attempt"),
                        }
                    )
    else:
        page = await info.records_page(
            (state,), queue, before=cursor, limit=PAGE, function=function, **dash.target
        )
        rows = [
            {
                "job_id": rec.job_id,
                "function": rec.function or None,
                "queue": rec.queue,
                "when": rec.finished_at,
                "error": rec.error,
                "attempt": rec.attempt,
                "worker": rec.worker,
                "seq": seq,
            }
            for seq, rec in page.items
        ]
        next_cursor = page.older
    return {
        "state": state,
        "states": STATES,
        "queue": queue,
        "function": function,
        "rows": rows,
        "next_cursor": next_cursor,
        "queues": await info.list_queues(**dash.target),
    }


async def job_detail(dash: Dashboard, params: dict[str, str]) -> dict[str, Any]:
    job_id = validate_job_id(params.get("job_id", ""))
    status = None
    with contextlib.suppress(JobNotFound):
        status = await fetch_job_status(job_id, **dash.target)
    record = await info.job_record(job_id, **dash.target)
    stored = await info.stored_job(job_id, **dash.target)
    entry = None
    if seq := _int(params, "seq"):
        with contextlib.suppress(JobNotFound):
            entry = await failed_api.failed_at(seq, **dash.target)
            if entry.job_id != job_id:
                entry = None
    if entry is None and record is not None and record.status == "failed" and record.queue:
        # Its newest entry in the failed stream, if it is among the recent ones (a
        # bounded scan of its queue's entries): the call it was made with.
        recent = await failed_api.failed_page(record.queue, limit=1, job_id=job_id, **dash.target)
        entry = recent.items[0][1] if recent.items else None
    body = stored.body if stored is not None else entry.body if entry is not None else None
    if status is None and record is None and stored is None and entry is None:
        raise JobNotFound(f"no job {job_id}")
    result = None
    if record is not None and record.status == "finished":
        result = show_value(record.serializer, record.payload)
    timeline = []
    if status is not None and status.enqueued_at:
        timeline.append(("enqueued", status.enqueued_at))
    if record is not None:
        if record.enqueued_at:
            timeline.append(("enqueued", record.enqueued_at))
        if record.started_at:
            timeline.append(("started", record.started_at))
        timeline.append((record.status, record.finished_at))
    elif status is not None and status.started_at:
        timeline.append(("started", status.started_at))
    if entry is not None:
        timeline.append(("failed for good", entry.failed_at))
    timeline = list(dict.fromkeys(timeline))
    waiting_for = list(status.waiting_for) if status is not None else []
    return {
        "job_id": job_id,
        "status": status,
        "record": record,
        "stored": stored,
        "entry": entry,
        "call": show_call(body, dash.redactor) if body is not None else None,
        "result": result,
        "timeline": sorted(timeline, key=lambda t: t[1]),
        "depends_on": waiting_for,
        "dependents": await info.dependents(job_id, **dash.target),
    }


async def failed(dash: Dashboard, params: dict[str, str]) -> dict[str, Any]:
    queue = _name(params, "queue")
    function = params.get("function") or None
    page = await failed_api.failed_page(
        queue, function, before=_int(params, "before"), limit=PAGE, **dash.target
    )
    counts = await info.failed_counts(**dash.target)
    return {
        "queue": queue,
        "function": function,
        "entries": [entry for _, entry in page.items],
        "older": page.older,
        "total": sum(counts.values()) if queue is None else counts.get(queue, 0),
        "queues": sorted(counts),
        "calls": {entry.seq: show_call(entry.body, dash.redactor) for _, entry in page.items},
    }


async def scheduled(dash: Dashboard, params: dict[str, str]) -> dict[str, Any]:
    recurring = await schedules.list_schedules(**dash.target)
    delayed, more = await info.stored_jobs_page(
        delayed=True, after=_int(params, "cursor") or 0, limit=PAGE, **dash.target
    )
    return {
        "recurring": [(s, schedules.job_of(s)["function"]) for s in recurring],
        "delayed": delayed,
        "next_cursor": more if len(delayed) == PAGE else None,
    }


async def workers(dash: Dashboard, params: dict[str, str]) -> dict[str, Any]:
    found = await info.list_workers(**dash.target)
    return {
        "supervisors": [w for w in found if w.get("role") != "scheduler"],
        "schedulers": [w for w in found if w.get("role") == "scheduler"],
        "leader": await info.current_leader(**dash.target),
    }


PAGES: dict[str, tuple[View, str]] = {
    "overview": (overview, "Overview"),
    "jobs": (jobs, "Jobs"),
    "failed": (failed, "Failed"),
    "scheduled": (scheduled, "Scheduled"),
    "workers": (workers, "Workers"),
    "job": (job_detail, "Job"),
}


# -- actions ------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    title: str
    fields: tuple[str, ...]
    back: str
    run: Callable[[Dashboard, dict[str, str]], Awaitable[str]]


async def _requeue(dash: Dashboard, form: dict[str, str]) -> str:
    job_id = validate_job_id(form.get("job_id", ""))
    await failed_api.requeue_failed([job_id], **dash.target)
    return f"requeued {job_id}"


async def _requeue_matching(dash: Dashboard, form: dict[str, str]) -> str:
    done = await failed_api.requeue_failed(
        all=True,
        queue=_name(form, "queue"),
        function=form.get("function") or None,
        **dash.target,
    )
    return f"requeued {len(done)} job{'s' * (len(done) != 1)}"


async def _purge(dash: Dashboard, form: dict[str, str]) -> str:
    count = await failed_api.purge_failed(_name(form, "queue"), **dash.target)
    return f"purged {count} failed entr{'y' if count == 1 else 'ies'}"


def _schedule_action(
    verb: str, call: Callable[..., Awaitable[Any]]
) -> Callable[[Dashboard, dict[str, str]], Awaitable[str]]:
    async def act(dash: Dashboard, form: dict[str, str]) -> str:
        schedule_id = validate_job_id(form.get("schedule_id", ""))
        await call(schedule_id, **dash.target)
        return f"{verb} {schedule_id}"

    return act


async def _run_now(schedule_id: str, **target: Any) -> None:
    await schedules.modify_scheduled_job(schedule_id, next_run=time.time(), **target)


ACTIONS: dict[str, Action] = {
    "requeue": Action("Requeue failed job {job_id}", ("job_id",), "/failed", _requeue),
    "requeue-matching": Action(
        "Requeue every failed job matching queue={queue} function={function}",
        ("queue", "function"),
        "/failed",
        _requeue_matching,
    ),
    "purge": Action(
        "Purge the failed entries of queue={queue} (empty: every queue)",
        ("queue",),
        "/failed",
        _purge,
    ),
    "pause": Action(
        "Pause schedule {schedule_id}",
        ("schedule_id",),
        "/scheduled",
        _schedule_action("paused", schedules.pause_scheduled_job),
    ),
    "resume": Action(
        "Resume schedule {schedule_id}",
        ("schedule_id",),
        "/scheduled",
        _schedule_action("resumed", schedules.resume_scheduled_job),
    ),
    "cancel": Action(
        "Cancel schedule {schedule_id} (it is removed)",
        ("schedule_id",),
        "/scheduled",
        _schedule_action("cancelled", schedules.cancel_recurring),
    ),
    "run-now": Action(
        "Run schedule {schedule_id} now (its next run becomes now)",
        ("schedule_id",),
        "/scheduled",
        _schedule_action("set to run now:", _run_now),
    ),
}


# -- HTTP -----------------------------------------------------------------------------


def _params(request: Request) -> dict[str, str]:
    params = dict(request.query_params)
    params.update({k: str(v) for k, v in request.path_params.items()})
    return params


async def _render_view(
    dash: Dashboard, page: str, params: dict[str, str]
) -> tuple[dict[str, Any], str | None]:
    view, _ = PAGES[page]
    try:
        return await view(dash, params), None
    except (ConfigurationError, JobNotFound) as exc:
        return {}, str(exc)
    except (NaqError, nats.errors.Error, TimeoutError, OSError) as exc:
        log.warning("reading %s failed: %s", page, exc)
        return {}, dash.settings.redact(f"reading from NATS failed: {exc}")


def _common(request: Request, dash: Dashboard, page: str) -> dict[str, Any]:
    return {
        "page": page,
        "pages": [(name, title) for name, (_, title) in PAGES.items() if name != "job"],
        "admin": dash.admin,
        "csrf": guards.csrf_token(request),
        "namespace": dash.settings.namespace,
        "notice": request.query_params.get("done"),
        "params": dict(request.query_params),
    }


def make_app(settings: Settings) -> Starlette:
    """The dashboard for ``settings`` (namespace, NATS URL, admin, auth, redaction)."""
    dash = Dashboard(
        settings,
        load_redactor(settings.dashboard_redact),
        Rates(settings.nats_url, settings.namespace),
    )
    guard = guards.Guard(settings)

    def page_route(page: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            params = _params(request)
            context, error = await _render_view(dash, page, params)
            live = f"/live/{page}?{urlencode(params)}"
            html = templates.get_template(f"{page}.html").render(
                **_common(request, dash, page), **context, error=error, live=live
            )
            return HTMLResponse(html, status_code=200 if error is None else 400)

        return endpoint

    async def live(request: Request) -> Response:
        page = request.path_params["page"]
        if page not in PAGES:
            return Response("no such page", status_code=404)
        params = dict(request.query_params)
        common = _common(request, dash, page)

        async def events() -> AsyncIterator[str]:
            last = None
            while True:
                started = time.monotonic()
                context, error = await _render_view(dash, page, params)
                html = templates.get_template(f"_{page}.html").render(
                    **common, **context, error=error
                )
                if html != last:
                    last = html
                    data = "\n".join(f"data: {line}" for line in html.splitlines())
                    yield f"event: live\n{data}\n\n"
                else:
                    yield ": idle\n\n"
                # A page that is costly to read (many delayed jobs to count, a slow
                # server) is read less often: never more than half the time.
                await asyncio.sleep(max(REFRESH, 2 * (time.monotonic() - started)))

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    def admin_action(request: Request) -> tuple[str, Action] | Response:
        """The action a URL names, or the answer refusing it (unknown, or no --admin)."""
        name = request.path_params["action"]
        action = ACTIONS.get(name)
        if action is None:
            return Response("no such action", status_code=404)
        if not dash.admin:
            return _refused(dash, "actions are off: start the dashboard with --admin")
        return name, action

    async def confirm(request: Request) -> Response:
        found = admin_action(request)
        if isinstance(found, Response):
            return found
        name, action = found
        params = {f: request.query_params.get(f, "") for f in action.fields}
        html = templates.get_template("confirm.html").render(
            **_common(request, dash, "confirm"),
            action=name,
            title=action.title.format(**params),
            fields=params,
            back=action.back,
        )
        return HTMLResponse(html)

    async def act(request: Request) -> Response:
        found = admin_action(request)
        if isinstance(found, Response):
            return found
        _, action = found
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        if not guards.csrf_ok(request, form):
            return _refused(dash, "refused: the form's CSRF token is missing or wrong")
        try:
            done = await action.run(dash, form)
        except (ConfigurationError, JobNotFound) as exc:
            done = f"not done: {exc}"
        return RedirectResponse(f"{action.back}?{urlencode({'done': done})}", status_code=303)

    async def login(request: Request) -> Response:
        error = None
        if request.method == "POST" and guard.token:
            form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
            if not guards.csrf_ok(request, form):
                return _refused(dash, "refused: the form's CSRF token is missing or wrong")
            if guards.equal(form.get("token"), guard.token):
                response = RedirectResponse("/", status_code=303)
                response.set_cookie(
                    guards.SESSION_COOKIE,
                    guards.session_value(guard.token),
                    httponly=True,
                    samesite="strict",
                )
                return response
            error = "wrong token"
        html = templates.get_template("login.html").render(
            **_common(request, dash, "login"), error=error
        )
        return HTMLResponse(html, status_code=200 if error is None else 401)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sampler = asyncio.create_task(keep_running("naq-dashboard-rates", dash.rates.run))
        try:
            yield
        finally:
            await finish([sampler], cancel=True)
            await close_connections()

    routes = [
        Route("/", page_route("overview")),
        Route("/jobs", page_route("jobs")),
        Route("/jobs/{job_id}", page_route("job")),
        Route("/failed", page_route("failed")),
        Route("/scheduled", page_route("scheduled")),
        Route("/workers", page_route("workers")),
        Route("/live/{page}", live),
        Route("/confirm/{action}", confirm),
        Route("/actions/{action}", act, methods=["POST"]),
        Route("/login", login, methods=["GET", "POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=guards.middleware(guard))],
        lifespan=lifespan,
    )


def _refused(dash: Dashboard, why: str) -> Response:
    return HTMLResponse(
        templates.get_template("refused.html").render(why=why, namespace=dash.settings.namespace),
        status_code=403,
    )
