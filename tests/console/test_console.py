"""The web console in headless Chromium against a real cluster: sign-in, backends (add, health,
deactivate, delete refused while in use), a frontend edited with the API's validation messages, a
pull watched to the end, a routing dry-run, a follower's leader-only views, and no request leaving
127.0.0.1 from the console or the API docs pages."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.console.conftest import TOKEN, ConsoleCluster
from tests.controlplane.harness import running_controlplane

pytestmark = pytest.mark.slow

WAIT = 10_000  # ms: the longest any expectation waits (health probes, pulls)
DOCS = Path(__file__).resolve().parents[2] / "docs"


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@contextlib.asynccontextmanager
async def console(
    browser: Any, url: str, *, token: str | None = TOKEN, **context_options: Any
) -> AsyncIterator[Any]:
    """A page of the console at ``url``, signed in with ``token`` (None: not signed in); fails the test
    on any script error or CSP violation."""
    context = await browser.new_context(viewport={"width": 1280, "height": 820}, **context_options)
    context.set_default_timeout(WAIT)
    page = await context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console: {msg.text}")
            if msg.type == "error" and "status of 4" not in msg.text and "status of 503" not in msg.text
            else None
        ),
    )
    try:
        await page.goto(url + "/console")
        if token is not None:
            await page.fill("#token", token)
            await page.click("#sign-in-form button[type=submit]")
            await page.wait_for_selector("#nav", state="visible")
        yield page
        assert problems == []
    finally:
        await context.close()


async def view(page: Any, name: str) -> None:
    await page.evaluate(f"location.hash = '#{name}'")
    await page.wait_for_selector(f"#view-{name}")


async def test_the_page_assets_and_docs_are_served_without_a_token_and_locally(
    cluster: ConsoleCluster,
) -> None:
    async with httpx.AsyncClient(base_url=cluster.url) as anonymous:
        page = await anonymous.get("/console")
        assert (await anonymous.get("/console/")).status_code == 200
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert (
            "default-src 'none'" in policy
            and "script-src 'self'" in policy
            and "connect-src 'self'" in policy
        )
        script = await anonymous.get("/console/assets/main.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert script.headers["content-security-policy"] == policy
        for outside in (
            "/console/assets/%2e%2e/routes.py",
            "/console/assets/..%2froutes.py",
            "/console/routes.py",
        ):
            assert (await anonymous.get(outside)).status_code == 404, outside
        # The data needs the token.
        assert (await anonymous.get("/v1.0/backends")).status_code == 401
        for docs in ("/schema", "/schema/swagger", "/schema/redoc"):
            html = (await anonymous.get(docs)).text
            assert "/schema/assets/" in html and "https://" not in html, docs
        assert (await anonymous.get("/schema/assets/swagger-ui-bundle.js")).status_code == 200
        redoc = await anonymous.get("/schema/assets/redoc.standalone.js")
        assert redoc.status_code == 200 and b"cdn.redoc.ly" not in redoc.content
        # Only the files the pages load: the bundles' sample pages (they fetch a petstore) are not served.
        assert (await anonymous.get("/schema/assets/index.html")).status_code == 404


async def test_a_wrong_token_is_refused_clearly_and_the_right_one_shows_the_cluster(
    browser: Any, cluster: ConsoleCluster
) -> None:
    async with console(browser, cluster.url, token=None) as page:
        await page.fill("#token", "not a token")  # a header cannot carry it: said before any request
        await page.click("#sign-in-form button[type=submit]")
        error = page.locator("#sign-in-error")
        await error.get_by_text("printable ASCII without spaces").wait_for()
        await page.fill("#token", "not-the-token")
        await page.click("#sign-in-form button[type=submit]")
        await error.get_by_text("did not accept").wait_for()
        assert "did not accept this admin token (401" in await error.inner_text()
        assert await page.is_hidden("#nav")

        await page.fill("#token", TOKEN)
        await page.click("#sign-in-form button[type=submit]")
        await page.wait_for_selector("#dataplanes tr[data-dataplane='dp-console']", timeout=WAIT)
        assert "cp-console-1 (leader)" in await page.inner_text("#replica")
        assert await page.evaluate("sessionStorage.getItem('ollamaflow.adminToken')") == TOKEN
        await page.reload()  # the tab keeps the token
        await page.wait_for_selector("#dataplanes tr[data-dataplane='dp-console']", timeout=WAIT)
        await page.click("#sign-out")
        await page.wait_for_selector("#sign-in", state="visible")
        assert await page.evaluate("sessionStorage.getItem('ollamaflow.adminToken')") is None


async def _pull_progress(page: Any, selector: str) -> list[str]:
    """The progress texts a pull's row shows, sampled until it is done."""
    seen: list[str] = []
    row = page.locator(selector)
    for _ in range(400):
        if await row.count():
            text = await row.locator("[data-progress]").inner_text()
            if not seen or seen[-1] != text:
                seen.append(text)
            if await row.get_attribute("data-state") in ("done", "failed"):
                return seen
        await asyncio.sleep(0.025)
    raise AssertionError(f"the pull did not finish; progress seen: {seen}")


async def test_add_a_backend_edit_a_frontend_and_watch_a_pull(browser: Any, cluster: ConsoleCluster) -> None:
    admin = cluster.admin
    created = await admin.put(
        "/v1.0/frontends", json={"Identifier": "main", "Hostname": "*", "AllowRouteExplain": True}
    )
    assert created.status_code == 201, created.text
    sim = cluster.sims[0]
    async with console(browser, cluster.url) as page:
        # Add a backend; the API's own message for a bad port, then the fixed one.
        await view(page, "backends")
        await page.click("#add-backend")
        await page.fill("#field-Identifier", "sim-a")
        await page.fill("#field-Hostname", "127.0.0.1")
        await page.fill("#field-Port", "70000")
        await page.click("#editor button[type=submit]")
        problem = page.locator("#editor .problem")
        await problem.wait_for()
        assert re.search(r"400 BadRequest.*Port.*65535", await problem.inner_text(), re.S)
        await page.fill("#field-Port", str(_port(sim)))
        await page.click("#editor button[type=submit]")
        await page.wait_for_selector("#editor", state="hidden")
        health = page.locator("tr[data-backend='sim-a'] [data-health]")
        await health.get_by_text("healthy", exact=True).wait_for(timeout=WAIT)
        await (
            page.locator("tr[data-backend='sim-a'] [data-models]")
            .get_by_text(re.compile("llama3.2"))
            .wait_for(timeout=WAIT)
        )
        assert (await admin.get("/v1.0/backends/sim-a")).json()["Port"] == _port(sim)
        # The last probe's latency, as the health view gives it.
        probe = page.locator("tr[data-backend='sim-a'] [data-probe]")
        await probe.get_by_text(re.compile(r"^[0-9.]+ ms$")).wait_for(timeout=WAIT)

        # Edit it: secrets the API shows as "<redacted>" come back unchanged from the replace.
        secrets = {"BearerToken": "tok-1", "Headers": {"X-Api-Key": "key-1"}}
        assert (await admin.patch("/v1.0/backends/sim-a", json=secrets)).status_code == 200
        await page.click("tr[data-backend='sim-a'] button:text('Edit')")
        await page.fill("#field-MaxParallelRequests", "8")
        await page.click("#editor button[type=submit]")
        await page.wait_for_selector("#editor", state="hidden")
        await page.locator("tr[data-backend='sim-a'] [data-inflight]").get_by_text("/ 8").wait_for()
        edited = (await admin.get("/v1.0/backends/sim-a")).json()
        assert edited["MaxParallelRequests"] == 8 and edited["HasBearerToken"] is True
        assert edited["Headers"] == {"X-Api-Key": "<redacted>"}

        # Deactivate (PATCH Active false), then activate again.
        await page.click("tr[data-backend='sim-a'] button:text('Deactivate')")
        await health.get_by_text("inactive", exact=True).wait_for(timeout=WAIT)
        assert (await admin.get("/v1.0/backends/sim-a")).json()["Active"] is False
        await page.click("tr[data-backend='sim-a'] button:text('Activate')")
        await health.get_by_text("healthy", exact=True).wait_for(timeout=WAIT)

        # Edit the frontend: a refused value shows the API's description; the rest of it is kept.
        await view(page, "frontends")
        await page.click("tr[data-frontend='main'] button:text('Edit')")
        await page.fill("#field-Backends", "sim-a")
        await page.fill("#field-QueueSize", "-1")
        await page.click("#editor button[type=submit]")
        await problem.wait_for()
        assert re.search(r"QueueSize.*>= 0", await problem.inner_text())
        await page.fill("#field-QueueSize", "64")
        await page.click("#editor button[type=submit]")
        await page.wait_for_selector("#editor", state="hidden")
        await page.locator("tr[data-frontend='main']").get_by_text("sim-a", exact=True).wait_for()
        stored = (await admin.get("/v1.0/frontends/main")).json()
        assert stored["Backends"] == ["sim-a"] and stored["QueueSize"] == 64
        assert stored["AllowRouteExplain"] is True  # a field the form does not show survives the replace

        # A frontend written whole as JSON: text that is not JSON is caught before it is sent.
        await page.click("#add-frontend")
        await page.fill("#field-Identifier", "second")
        await page.click("#editor summary")
        json_editor = page.locator("#editor textarea")
        assert json.loads(await json_editor.input_value())["Identifier"] == "second"  # the form so far
        await json_editor.fill('{"Identifier": "second",')
        await page.click("#editor button[type=submit]")
        assert "Not JSON" in await problem.inner_text()
        await json_editor.fill('{"Identifier": "second", "Hostname": "second.example", "QueueSize": 7}')
        await page.click("#editor button[type=submit]")
        await page.wait_for_selector("#editor", state="hidden")
        await page.locator("tr[data-frontend='second']").wait_for()
        assert (await admin.get("/v1.0/frontends/second")).json()["QueueSize"] == 7
        assert (await admin.delete("/v1.0/frontends/second")).status_code == 204

        # Start a pull and watch its progress arrive.
        await view(page, "models")
        await page.locator("#pull-frontend option[value='main']").wait_for(state="attached")
        await page.select_option("#pull-frontend", "main")
        await page.fill("#pull-model", "smollm:135m")
        await page.click("#pull-form button[type=submit]")
        await page.get_by_text("smollm:135m added to main's RequiredModels").wait_for()
        progress = await _pull_progress(page, "tr[data-pull='sim-a/smollm:135m']")
        assert await page.get_attribute("tr[data-pull='sim-a/smollm:135m']", "data-state") == "done"
        percents = [int(m[1]) for text in progress if (m := re.search(r"\((\d+)%\)", text))]
        assert any(0 < p < 100 for p in percents), progress
        assert percents[-1] == 100, progress
        await page.locator("#models-table tr[data-model='smollm:135m']").wait_for(timeout=WAIT)
        assert (await admin.get("/v1.0/frontends/main")).json()["RequiredModels"] == ["smollm:135m"]

        # Why would a request go there?
        await view(page, "explain")
        await page.locator("#explain-frontend option[value='main']").wait_for(state="attached")
        await page.fill("#explain-model", "smollm:135m")
        await page.click("#view-explain button[type=submit]")
        await page.locator("#explain-result h2").get_by_text("→ sim-a").wait_for(timeout=WAIT)

        if os.environ.get("OLLAMAFLOW_CONSOLE_SCREENSHOTS"):  # refreshes docs/console-*.png
            await admin.put(
                "/v1.0/backends",
                json={
                    "Identifier": "sim-b",
                    "Name": "second GPU box",
                    "Hostname": "127.0.0.1",
                    "Port": _port(cluster.sims[1]),
                },
            )
            await view(page, "backends")
            await (
                page.locator("tr[data-backend='sim-b'] [data-health]")
                .get_by_text("healthy", exact=True)
                .wait_for(timeout=WAIT)
            )
            await page.screenshot(path=str(DOCS / "console-backends.png"), full_page=True)
            await view(page, "models")
            await page.screenshot(path=str(DOCS / "console-models.png"), full_page=True)
            await view(page, "overview")
            await page.wait_for_selector("#dataplanes tr[data-dataplane='dp-console']")
            async with httpx.AsyncClient(base_url=cluster.dataplane.url, timeout=30) as client:
                body = {"model": "llama3.2", "prompt": "Why is the sky blue?", "stream": False}
                chats = [asyncio.create_task(client.post("/api/generate", json=body)) for _ in range(6)]
                await asyncio.sleep(2.5)  # two polls: requests in flight, and a rate from two samples
                await page.screenshot(path=str(DOCS / "console-overview.png"), full_page=True)
                await asyncio.gather(*chats)
            await admin.delete("/v1.0/backends/sim-b")

        # A backend a frontend lists cannot be deleted: the API says why.
        await view(page, "backends")
        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await page.click("tr[data-backend='sim-a'] button:text('Delete')")
        refused = page.locator("#view-backends .problem")
        await refused.wait_for()
        assert "409" in await refused.inner_text()

    assert (await admin.delete("/v1.0/frontends/main")).status_code == 204
    assert (await admin.delete("/v1.0/backends/sim-a")).status_code == 204


async def test_a_follower_shows_the_leaders_views_as_the_leaders(
    browser: Any, cluster: ConsoleCluster
) -> None:
    follower_settings = dataclasses.replace(cluster.settings, replica_id="cp-console-2")
    with contextlib.ExitStack() as stack:
        follower = await asyncio.to_thread(stack.enter_context, running_controlplane(follower_settings))
        async with console(browser, follower.url) as page:
            await page.get_by_text("follower; leader cp-console-1").wait_for(timeout=WAIT)
            await view(page, "backends")
            notice = page.locator("#view-backends .notice")
            await notice.wait_for(timeout=WAIT)
            assert "Shown by the leading control plane only" in await notice.inner_text()
            assert "cp-console-1" in await notice.inner_text()
            await page.locator(
                "#backends-table, #view-backends p.muted"
            ).first.wait_for()  # the list itself works
            await view(page, "models")
            await page.locator("#models .notice").wait_for(timeout=WAIT)
        await asyncio.to_thread(stack.close)


async def test_no_request_leaves_127_0_0_1_from_the_console_or_the_docs(
    browser: Any, cluster: ConsoleCluster
) -> None:
    outside: list[str] = []

    async def only_loopback(route: Any) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    async with console(browser, cluster.url, token=None) as page:
        await page.context.route("**/*", only_loopback)
        await page.reload()
        await page.fill("#token", TOKEN)
        await page.click("#sign-in-form button[type=submit]")
        for name in ("overview", "backends", "frontends", "models", "explain"):
            await view(page, name)
            await page.wait_for_timeout(300)
        await page.goto(cluster.url + "/schema/swagger")
        await (
            page.locator(".swagger-ui .info .title")
            .get_by_text("OllamaFlow control plane")
            .wait_for(timeout=WAIT)
        )
        await page.locator(".opblock-tag").first.wait_for()
        await page.goto(cluster.url + "/schema/redoc")
        await page.locator("h1").get_by_text("OllamaFlow control plane").wait_for(timeout=WAIT)
    assert outside == []
