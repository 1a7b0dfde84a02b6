"""The dashboard in a real browser: Debian's chromium driven by Playwright, against the
real ``naq dashboard`` process, a real nats-server and a real ``naq-supervise``.

Waits are Playwright's: an assertion on the page retries until the page shows it (the
live fragment arrives over SSE), never a fixed sleep. Each test saves screenshots of
the pages it visits under ``tests/artifacts/`` (gitignored) for a person to look at.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import async_playwright, expect

from naq.errors import JobFailed
from naq.producer.schedules import list_schedules, schedule
from naq.queue import Queue
from naq.settings import Settings
from naq.transport.server import free_port
from tests import jobs
from tests.conftest import ROOT
from tests.e2e.conftest import NAQ, READY, Proc, Spawn, SuperviseFn

CHROMIUM = os.environ.get("NAQ_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"
WAIT = 20_000  # ms: how long a page assertion retries before it fails

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    # CI installs chromium first (scripts/install-system-deps) and must never skip these.
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
        reason=f"{CHROMIUM} missing: scripts/install-system-deps installs it",
    ),
]


@dataclass
class Running:
    base: str
    proc: Proc


Dashboard = Callable[..., Running]


@pytest.fixture
def dashboard(spawn: Spawn, nats_url: str, namespace: str) -> Dashboard:
    """Start ``naq dashboard`` on a free port; returns its base URL once it listens."""

    def start(*args: str, **env: str) -> Running:
        port = free_port()
        proc: Proc = spawn(
            NAQ, "dashboard",
            "--nats-url", nats_url,
            "--namespace", namespace,
            "--port", str(port),
            "--log-level", "INFO",
            *args,
            **env,
        )  # fmt: skip
        proc.wait_line(r"Uvicorn running on", timeout=30)
        return Running(f"http://127.0.0.1:{port}", proc)

    return start


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    """A fresh page; every JavaScript dialog it opens is recorded (and dismissed)."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    page.dialogs = []

    async def on_dialog(dialog: Any) -> None:
        page.dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    try:
        yield page
    finally:
        await context.close()


async def shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"dashboard-{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def test_a_job_enqueued_appears_live_without_a_reload(
    dashboard: Dashboard, page: Any, settings: Settings
) -> None:
    running = dashboard()
    base = running.base
    await page.goto(f"{base}/jobs?state=waiting&queue=live")
    await expect(page.locator("#jobs")).to_contain_text("no waiting jobs", timeout=WAIT)
    await page.evaluate("window.notReloaded = true")
    async with Queue("live", settings=settings) as q:
        job = await q.enqueue(jobs.add, 1, 2)
    await expect(page.locator("#jobs")).to_contain_text(job.job_id, timeout=WAIT)
    await expect(page.locator("#jobs")).to_contain_text("tests.jobs:add")
    assert await page.evaluate("window.notReloaded") is True  # the same page, updated
    await shot(page, "jobs")
    await page.goto(base + "/")
    await expect(page.locator("#queues")).to_contain_text("live", timeout=WAIT)
    await shot(page, "overview")
    # A page's live stream never ends by itself: a stop must not wait for the browser.
    running.proc.send(signal.SIGTERM)
    assert await running.proc.exit_code(15) == 0


async def test_a_script_argument_shows_as_text(
    dashboard: Dashboard, page: Any, settings: Settings
) -> None:
    base = dashboard().base
    hostile = "<script>alert(1)</script>"
    async with Queue("xss", settings=settings) as q:
        job = await q.enqueue(jobs.echo, hostile, token="hunter2")
    await page.goto(f"{base}/jobs/{job.job_id}")
    call = page.locator("#call")
    await expect(call).to_contain_text(hostile, timeout=WAIT)
    assert "&lt;script&gt;" in await call.inner_html()
    assert "hunter2" not in await page.content()  # the default redaction masks it
    await page.goto(f"{base}/jobs?state=waiting&queue=xss")
    await expect(page.locator("#jobs")).to_contain_text(job.job_id, timeout=WAIT)
    await shot(page, "job")
    await page.goto(f"{base}/jobs/{job.job_id}")
    await expect(call).to_contain_text(hostile, timeout=WAIT)
    await shot(page, "job-detail")
    assert page.dialogs == []


async def test_a_failed_job_is_requeued_from_the_page_and_then_finishes(
    dashboard: Dashboard,
    page: Any,
    settings: Settings,
    supervise: SuperviseFn,
    tmp_path: Path,
) -> None:
    sup = supervise("flaky", "--executor", "process", "--concurrency", "2")
    await sup.line(READY)
    base = dashboard("--admin").base
    async with Queue("flaky", settings=settings) as q:
        job = await q.enqueue(jobs.flaky, str(tmp_path / "tries"), 1, max_retries=0)
        with pytest.raises(JobFailed):
            await q.fetch_result(job.job_id, timeout=20)
        await page.goto(f"{base}/failed?queue=flaky")
        row = page.locator("#failed tr", has_text=job.job_id)
        await expect(row).to_contain_text("failure 1 of 1", timeout=WAIT)
        await shot(page, "failed")
        await row.get_by_role("link", name="requeue…").click()
        await expect(page.locator("#what")).to_contain_text(f"Requeue failed job {job.job_id}")
        await shot(page, "confirm")
        await page.locator("#confirm").click()
        await expect(page.locator("#notice")).to_have_text(f"requeued {job.job_id}")
        assert await q.fetch_result(job.job_id, timeout=20) == 2
    await page.goto(f"{base}/jobs/{job.job_id}")
    await expect(page.locator("#status")).to_have_text("finished", timeout=WAIT)
    await page.goto(f"{base}/workers")
    children = page.locator("table.children tr")
    await expect(children).to_have_count(3, timeout=WAIT)  # a header and two children
    await expect(page.locator("table.children")).to_contain_text("MiB")
    await shot(page, "workers")
    await page.goto(base + "/")
    await expect(page.locator("#workers")).to_contain_text("flaky", timeout=WAIT)
    await shot(page, "overview-with-worker")


async def test_a_schedule_is_paused_resumed_run_now_and_cancelled(
    dashboard: Dashboard, page: Any, target: dict[str, str]
) -> None:
    await schedule(jobs.noop, interval=3600, schedule_id="nightly", **target)
    base = dashboard("--admin").base
    await page.goto(f"{base}/scheduled")
    row = page.locator("#schedule-nightly")
    await expect(row.locator(".status")).to_have_text("active", timeout=WAIT)
    await shot(page, "scheduled")
    for verb, then in (("pause", "paused"), ("resume", "active")):
        await row.get_by_role("link", name=f"{verb}…").click()
        await page.locator("#confirm").click()
        await expect(page.locator("#notice")).to_contain_text("nightly")
        await expect(row.locator(".status")).to_have_text(then, timeout=WAIT)
        [found] = await list_schedules(schedule_id="nightly", **target)
        assert found.status == then
    asked = time.time()
    await row.get_by_role("link", name="run now…").click()
    await page.locator("#confirm").click()
    await expect(page.locator("#notice")).to_contain_text("run now: nightly")
    [found] = await list_schedules(schedule_id="nightly", **target)
    assert asked - 1 <= found.next_run <= time.time()  # was an hour away (whole seconds)
    await row.get_by_role("link", name="cancel…").click()
    await expect(page.locator("#what")).to_contain_text("Cancel schedule nightly")
    await page.locator("#confirm").click()
    await expect(page.locator("#recurring")).to_contain_text("no recurring schedules", timeout=WAIT)
    assert await list_schedules(schedule_id="nightly", **target) == []


async def test_a_post_without_the_csrf_token_is_refused(
    dashboard: Dashboard, page: Any, target: dict[str, str]
) -> None:
    await schedule(jobs.noop, interval=3600, schedule_id="guarded", **target)
    base = dashboard("--admin").base
    await page.goto(f"{base}/confirm/pause?schedule_id=guarded")  # sets the CSRF cookie
    token = await page.locator("input[name=csrf]").get_attribute("value")
    assert token
    for form in ({"schedule_id": "guarded"}, {"schedule_id": "guarded", "csrf": "x" * 64}):
        refused = await page.request.post(f"{base}/actions/pause", form=form)
        assert refused.status == 403
        assert "CSRF" in await refused.text()
    [found] = await list_schedules(schedule_id="guarded", **target)
    assert found.status == "active"
    # The same POST with the token goes through: the refusal was the token's doing.
    done = await page.request.post(
        f"{base}/actions/pause", form={"schedule_id": "guarded", "csrf": token}
    )
    assert done.status == 200
    [found] = await list_schedules(schedule_id="guarded", **target)
    assert found.status == "paused"


async def test_without_admin_no_action_is_offered_or_accepted(
    dashboard: Dashboard,
    page: Any,
    settings: Settings,
    target: dict[str, str],
    supervise: SuperviseFn,
) -> None:
    await schedule(jobs.noop, interval=3600, schedule_id="hands-off", **target)
    sup = supervise("doomed", "--executor", "thread")
    await sup.line(READY)
    async with Queue("doomed", settings=settings) as q:
        job = await q.enqueue(jobs.fail, max_retries=0)
        with pytest.raises(JobFailed):
            await q.fetch_result(job.job_id, timeout=20)
    base = dashboard().base
    await page.goto(f"{base}/failed")
    await expect(page.locator("#failed")).to_contain_text(job.job_id, timeout=WAIT)
    await expect(page.locator("header .mode")).to_have_text("read-only")
    await page.goto(f"{base}/scheduled")
    await expect(page.locator("#schedule-hands-off")).to_contain_text("active", timeout=WAIT)
    for where, name in (
        ("/failed", "failed-read-only"),
        ("/scheduled", "scheduled-read-only"),
        (f"/jobs/{job.job_id}", "job-failed-read-only"),
    ):
        await page.goto(base + where)
        await expect(page.locator("#live")).not_to_be_empty(timeout=WAIT)
        assert await page.locator("a.button, form[method=post]").count() == 0, where
        await shot(page, name)
    # Reached from the jobs list (no failed-stream sequence given): its entry is found.
    await expect(page.locator("#call")).to_have_text("tests.jobs:fail()")
    confirm = await page.request.get(f"{base}/confirm/requeue?job_id={job.job_id}")
    assert confirm.status == 403
    cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
    for action, form in (
        ("requeue", {"job_id": job.job_id}),
        ("pause", {"schedule_id": "hands-off"}),
        ("purge", {}),
    ):
        refused = await page.request.post(
            f"{base}/actions/{action}", form={**form, "csrf": cookies["naq_csrf"]}
        )
        assert refused.status == 403, action
        assert re.search("--admin", await refused.text())
    [found] = await list_schedules(schedule_id="hands-off", **target)
    assert found.status == "active"
    async with Queue("doomed", settings=settings) as q:
        with pytest.raises(JobFailed):
            await q.fetch_result(job.job_id, timeout=1)


async def test_a_token_or_basic_auth_is_asked_for(dashboard: Dashboard, page: Any) -> None:
    token = "dash-" + "t" * 30
    base = dashboard(
        NAQ_DASHBOARD_TOKEN=token, NAQ_DASHBOARD_USER="ops", NAQ_DASHBOARD_PASSWORD="pw1"
    ).base
    plain = await page.request.get(f"{base}/failed", max_redirects=0)
    assert plain.status == 401
    assert token not in await plain.text()
    bearer = await page.request.get(f"{base}/failed", headers={"Authorization": f"Bearer {token}"})
    assert bearer.status == 200
    basic = await page.request.get(
        f"{base}/workers",
        headers={"Authorization": "Basic b3BzOnB3MQ=="},  # ops:pw1
    )
    assert basic.status == 200
    wrong = await page.request.get(
        f"{base}/workers",
        headers={"Authorization": "Basic b3BzOnB3Mg=="},  # ops:pw2
    )
    assert wrong.status == 401
    # A browser is sent to the login form; the token once, then a cookie that is not it.
    await page.goto(f"{base}/workers")
    assert page.url.endswith("/login")
    await page.locator("input[name=token]").fill("wrong")
    await page.locator("button[type=submit]").click()
    await expect(page.locator(".error")).to_have_text("wrong token")
    await page.locator("input[name=token]").fill(token)
    await page.locator("button[type=submit]").click()
    await expect(page.locator("#queues")).to_be_visible(timeout=WAIT)
    session = {c["name"]: c["value"] for c in await page.context.cookies()}["naq_session"]
    assert token not in session
    await shot(page, "overview-after-login")


def test_listening_beyond_loopback_needs_authentication(spawn: Spawn, nats_url: str) -> None:
    proc = spawn(NAQ, "dashboard", "--nats-url", nats_url, "--host", "0.0.0.0", "--port", "1")
    assert proc.wait_exit(15) == 2
    assert "no authentication" in proc.output()


async def test_requeue_all_matching_and_purge_from_the_page(
    dashboard: Dashboard,
    page: Any,
    settings: Settings,
    supervise: SuperviseFn,
    tmp_path: Path,
) -> None:
    sup = supervise("batch", "gone", "--executor", "thread")
    await sup.line(READY)
    base = dashboard("--admin").base
    async with Queue("batch", settings=settings) as batch, Queue("gone", settings=settings) as gone:
        flaky = [
            await batch.enqueue(jobs.flaky, str(tmp_path / f"tries{i}"), 1, max_retries=0)
            for i in range(3)
        ]
        doomed = await gone.enqueue(jobs.fail, "for good", max_retries=0)
        for job in [*flaky, doomed]:
            with pytest.raises(JobFailed):
                await batch.fetch_result(job.job_id, timeout=20)
        await page.goto(f"{base}/failed?queue=batch&function=tests.jobs:flaky")
        await expect(page.locator(".count")).to_have_text(
            "3 failed jobs in batch, newest first", timeout=WAIT
        )
        await page.locator("#requeue-matching").click()
        await expect(page.locator("#what")).to_contain_text("queue=batch function=tests.jobs:flaky")
        await page.locator("#confirm").click()
        await expect(page.locator("#notice")).to_have_text("requeued 3 jobs")
        for job in flaky:
            assert await batch.fetch_result(job.job_id, timeout=20) == 2
        await page.goto(f"{base}/failed?queue=gone")
        await expect(page.locator("#failed")).to_contain_text(doomed.job_id, timeout=WAIT)
        await page.locator("#purge").click()
        await page.locator("#confirm").click()
        await expect(page.locator("#notice")).to_have_text("purged 1 failed entry")
        await page.goto(f"{base}/failed")
        await expect(page.locator("#failed")).to_contain_text("no failed jobs here", timeout=WAIT)
