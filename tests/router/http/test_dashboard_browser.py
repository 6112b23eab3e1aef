"""GET /dashboard in a real headless Chromium, driven by Playwright: the page's JavaScript polls
/status and fills the tables, and the rendered DOM shows the backends and the last decisions.

Playwright cannot download its own browser here: it drives Debian's chromium, which .ci/run
installs. Without that binary the test skips, saying so, except under .ci/run, where it fails.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.fakes.proxy import running_proxy
from tests.fakes.system_binaries import require
from tests.fakes.upstream import FakeUpstream

CHROMIUM = "/usr/bin/chromium"
# No sandbox: CI runs as root. The rest keeps the browser from calling anywhere on its own.
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync"]
# Sent as a request id: the page must show it as text, never run it.
HOSTILE_ID = '<img src=x onerror="document.title=\'pwned\'">'

@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require(CHROMIUM, "apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    page = browser.new_page()
    # Fail fast: the page polls every second, so its first fill is well within this.
    page.set_default_timeout(10_000)
    yield page
    page.close()


def test_the_dashboard_renders_backends_and_decisions(page: Page) -> None:
    alpha = FakeUpstream("alpha").start()
    beta = FakeUpstream("beta", mode="refuse").start()
    config = (f'[[backends]]\nname = "alpha"\nurl = "{alpha.url}"\nmodels = ["smol"]\n'
              f'[[backends]]\nname = "beta"\nurl = "{beta.url}"\nmodels = ["big"]\n'
              "[upstream]\nfailure_threshold = 1\n")
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    try:
        with running_proxy(config) as proxy:
            # beta refuses its one request and is marked down.
            assert httpx.post(f"{proxy.url}/v1/chat/completions",
                              json={"model": "big", "messages": [{"role": "user", "content": "Hi"}]}).status_code == 502
            for request_id in ("first", "second", HOSTILE_ID):
                answer = httpx.post(f"{proxy.url}/v1/chat/completions", headers={"x-request-id": request_id},
                                    json={"model": "smol", "messages": [{"role": "user", "content": "Hi"}]})
                assert answer.status_code == 200, answer.text
            page.goto(f"{proxy.url}/dashboard")

            # The tables fill once the first poll of /status comes back.
            expect(page.locator("#backends tr[data-backend='alpha'] td").nth(1)).to_have_text("up")
            expect(page.locator("#backends tr[data-backend='beta'] td").nth(1)).to_have_text("down")
            expect(page.locator("#priorities tbody tr")).to_have_count(5)
            second = page.locator("#decisions tr[data-request='second']")
            expect(second).to_contain_text("→ alpha")
            expect(second.locator("td.reason")).to_contain_text("cache-affinity: ")
            expect(page.locator("#state")).to_contain_text("updated")

            # A request sent after the page loaded appears at the next poll, on top.
            httpx.post(f"{proxy.url}/v1/chat/completions", headers={"x-request-id": "late"},
                       json={"model": "smol", "messages": [{"role": "user", "content": "Later"}]})
            expect(page.locator("#decisions tbody tr").first).to_have_attribute("data-request", "late")

            text = page.locator("body").inner_text()
            url = proxy.url
    finally:
        alpha.stop()
        beta.stop()
    assert HOSTILE_ID in text and page.locator("#decisions img").count() == 0 and page.title() == "Triage status"
    # Offline: the page asked nothing of anyone but the router.
    assert requested and all(r.startswith(url + "/") for r in requested), requested
