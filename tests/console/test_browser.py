"""The web console in a real headless browser: Debian's chromium driven by Playwright (sync API).

The server runs in a thread of this process (the sync API cannot run inside an event loop), on the real
stack. Screenshots of each page go to ``$VPP_TEST_ARTEFACTS/console`` (default ``test-artefacts/console``).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import pytest

from console_fixtures import (PASSWORD, aggregate, insert_alert, produce_readings, seed_market, start_flow, stop,
                              store_aggregates)

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
ARTEFACTS = Path(os.environ.get("VPP_TEST_ARTEFACTS", Path(__file__).resolve().parents[2] / "test-artefacts")) / "console"

pytestmark = pytest.mark.skipif(not (os.access(CHROMIUM, os.X_OK) or shutil.which("chromium")),
                                reason="Debian's chromium is not installed (apt-get install -y chromium; scripts/bootstrap does)")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


def _log_in(browser, console_server, user: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(20_000)
    page.goto(console_server.url + "/")
    assert page.url.startswith(console_server.url + "/login")
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("#login")
    page.wait_for_url(console_server.url + "/")
    return page


def _shot(page, name: str) -> None:
    page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)


def test_an_unauthenticated_browser_sees_only_the_login_page(browser, console_server):
    from playwright.sync_api import expect

    page = browser.new_page()
    for path in ("/", "/market", "/dispatch", "/alerts", f"/nodes/{console_server.root}"):
        page.goto(console_server.url + path)
        expect(page.locator("#login")).to_be_visible()
    page.fill("#username", "operator")
    page.fill("#password", "not the password")
    page.click("#login")
    expect(page.locator("#login-error")).to_contain_text("wrong username or password")
    _shot(page, "login-refused")
    page.close()


def test_an_operator_watches_the_fleet_dispatches_acks_an_alert_and_logs_out(browser, console_server, tmp_path):
    from playwright.sync_api import expect

    root, settings = console_server.root, console_server.settings
    page = _log_in(browser, console_server, "operator")
    expect(page.locator("#who")).to_have_text("operator (operator)")

    # the fleet tree, updating live: a new window of the root arrives through the stores and the stream
    row = page.locator(f'#tree tr[data-path="{root}"]')
    expect(row).to_be_visible()
    expect(row.locator("td").nth(2)).to_have_text("4.0")
    expect(page.locator("#live")).to_have_class("live on")
    time.sleep(1.0)  # the poller's first look sets its starting point
    stored = time.perf_counter()
    store_aggregates(settings, [aggregate(root, int(time.time() * 1000) // 10_000 * 10_000, 7777.0, devices=4)])
    expect(row.locator("td").nth(2)).to_have_text("7.8")
    print(f"a stored window shown in the browser after {(time.perf_counter() - stored) * 1000:.0f} ms "
          f"(poll period {console_server.app.state.broadcaster.poll_s} s)")
    page.locator(f'#tree tr[data-path="{root}"] button.toggle').click()
    expect(page.locator(f'#tree tr[data-path="{root}/ca"]')).to_be_visible()
    _shot(page, "tree")

    # the node page: its facts and its history chart
    page.goto(f"{console_server.url}/nodes/{root}/ca/site0")
    expect(page.locator("#fact-battery_w")).to_have_text("2.0")
    expect(page.locator("#node-chart svg path[data-series]")).to_have_count(1)
    _shot(page, "node")

    # dispatch: issue a command, watch the dispatch flow accept it and the measured power shown
    page.goto(console_server.url + "/dispatch")
    page.fill("#dispatch-node", f"{root}/ca")
    page.fill("#dispatch-watts", "999999999")
    page.click("#dispatch-send")
    expect(page.locator("#dispatch-error")).to_contain_text("out of range")
    page.fill("#dispatch-watts", "3000")
    page.fill("#dispatch-minutes", "5")
    page.click("#dispatch-send")
    expect(page.locator("#command-id")).to_have_text(__import__("re").compile(r"cmd-[0-9a-f]{12}"))
    flow = start_flow(settings, "dispatch", tmp_path / "dispatch.log")
    try:
        deadline = time.monotonic() + 120
        while "accepted" not in (page.locator("#command").get_attribute("data-states") or ""):
            assert flow.poll() is None and time.monotonic() < deadline, (tmp_path / "dispatch.log").read_text()[-2000:]
            produce_readings(settings, root, int(time.time() * 1000))
            page.wait_for_timeout(1000)
    finally:
        stop(flow)
    expect(page.locator("#command-statuses tbody tr").first.locator("td").nth(1)).to_have_text("accepted")
    expect(page.locator("#command-measured")).to_contain_text(" W at ")
    expect(page.locator("#recent-commands tbody tr").first).to_contain_text("operator")
    _shot(page, "dispatch")

    # alerts: ack one
    alert_id = "al-" + uuid.uuid4().hex[:8]
    insert_alert(settings, alert_id, root)
    page.goto(console_server.url + "/alerts")
    alert_row = page.locator(f'#alerts tr[data-alert="{alert_id}"]')
    expect(alert_row).to_contain_text("node_silent")
    alert_row.locator("button.ack").click()
    expect(alert_row.locator("td.acked")).to_contain_text("operator")
    _shot(page, "alerts")

    seed_market(settings, root)
    page.goto(console_server.url + "/market")
    expect(page.locator("#market tbody tr")).to_have_count(6)
    expect(page.locator("#price-chart svg path[data-series]")).to_have_count(2)
    # planned and awarded power of the intervals, then (a second request) the bidding node's measured power:
    # the root reports, so all three
    for series in ("planned W", "awarded W", "measured W"):
        expect(page.locator(f'#power-chart svg path[data-series="{series}"]')).to_have_count(1)
    expect(page.locator("#market tbody tr").first.locator("td").nth(7)).to_have_text("4500")
    _shot(page, "market")

    page.click("#logout")
    page.wait_for_url(console_server.url + "/login")
    page.goto(console_server.url + "/dispatch")
    expect(page.locator("#login")).to_be_visible()  # the session is gone, not just the cookie
    page.close()


def test_a_viewer_does_not_see_the_dispatch_form_nor_ack_buttons(browser, console_server):
    from playwright.sync_api import expect

    insert_alert(console_server.settings, "al-" + uuid.uuid4().hex[:8], console_server.root)
    page = _log_in(browser, console_server, "viewer")
    page.goto(console_server.url + "/dispatch")
    expect(page.locator("#dispatch-readonly")).to_be_visible()
    expect(page.locator("#dispatch-form")).to_have_count(0)
    _shot(page, "dispatch-viewer")
    page.goto(console_server.url + "/alerts")
    expect(page.locator("#alerts tbody tr").first).to_be_visible()
    expect(page.locator("button.ack")).to_have_count(0)
    expect(page.locator("#nav-audit")).to_have_count(0)
    page.goto(console_server.url + "/audit")
    expect(page.locator("#forbidden")).to_contain_text("needs the role admin")
    # and the API behind the page refuses the viewer too, whatever a script sends
    status = page.evaluate("""() => fetch('/api/alerts/x/ack', {method: 'POST', headers: {'X-Requested-With': 'vpp-console'}})
                                     .then(r => r.status)""")
    assert status == 403
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.goto(console_server.url + "/")
    expect(page.locator(f'#tree tr[data-path="{console_server.root}"]')).to_be_visible()
    _shot(page, "tree-phone")
    page.close()


def test_an_admin_reads_the_audit_log_in_the_console(browser, console_server):
    from playwright.sync_api import expect

    page = _log_in(browser, console_server, "admin")
    page.click("#nav-audit")
    expect(page.locator("#audit tbody tr").first).to_be_visible()
    expect(page.locator("#audit tbody")).to_contain_text("POST /login")
    _shot(page, "audit")
    page.close()
