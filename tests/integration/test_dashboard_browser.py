"""The dashboard in a real browser (Chromium from the system, driven by Playwright) against a real
hub (`rtmh up`: embedded PostgreSQL and broker, worker, notifier, API) fed through Kafka.

Checked: the link `up` prints signs the browser in; a burst makes an incident appear on the open
Now page without a reload; its page shows the chart and the timeline; acknowledging it in the
page changes PostgreSQL and the timeline; a silence made in the page mutes the next
notification; a rule with an invalid threshold shows the API's own message next to the field;
every page renders without a script error at 1280x800 and at phone width (screenshots in
build/screenshots, or RTMH_SCREENSHOTS), answers the keyboard, and keeps its state in the URL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    expect,
    sync_playwright,
)

from .dashboard_support import (
    CHANNEL,
    RULE,
    Burst,
    Hub,
    chromium_path,
    incident_from_burst,
    running_hub,
    wait_until,
)

#: waits for the page, generous for a loaded CI machine; never a bound on speed
SEEN_MS = 60_000
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    home = tmp_path_factory.mktemp("browser-hub")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RTMH_", "POSTGRES_", "KAFKA_"))
    }
    env.update({"RTMH_DATA_DIR": str(home / "data"), "RTMH_API_PORT": "0"})
    with running_hub(env) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path())
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def signed_in(hub: Hub, browser: Browser) -> dict[str, Any]:
    """The browser's state after opening the link `rtmh up` printed: its session cookie. The
    link works once, so every test's context starts from this state."""
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.goto(hub.login_link)
    assert "code=" not in page.url  # the code does not stay in the address bar
    state = context.storage_state()
    context.close()
    assert any(c["name"] == "rtmh_session" and c["httpOnly"] for c in state["cookies"])
    return dict(state)


@pytest.fixture
def context(browser: Browser, signed_in: dict[str, Any]) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport=DESKTOP, storage_state=signed_in)  # type: ignore[arg-type]
    yield ctx
    ctx.close()


class Errors:
    """Script errors and console errors of a page: a page that works shows none. Chromium logs
    every answer of 400 or more as a console error; a test that provokes a refusal on purpose
    names its status in ``expected``."""

    def __init__(self, page: Page, expected: tuple[int, ...] = ()) -> None:
        self.seen: list[str] = []
        self._expected = tuple(f"the server responded with a status of {s} " for s in expected)
        page.on("pageerror", lambda err: self.seen.append(f"pageerror: {err}"))
        page.on("console", self._console)

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error" and not any(e in msg.text for e in self._expected):
            self.seen.append(f"console: {msg.text}")


def _screenshots() -> Path:
    where = Path(
        os.environ.get("RTMH_SCREENSHOTS")
        or Path(__file__).resolve().parents[2] / "build" / "screenshots"
    )
    where.mkdir(parents=True, exist_ok=True)
    return where


def _shoot(page: Page, name: str) -> None:
    page.screenshot(path=str(_screenshots() / f"{name}.png"), full_page=True)


def _api(hub: Hub) -> httpx.Client:
    return httpx.Client(
        base_url=hub.api_url, headers={"Authorization": f"Bearer {hub.token}"}, timeout=30
    )


# --- the checks the issue names -----------------------------------------------------------------
def test_a_burst_makes_an_incident_appear_on_the_open_page_without_a_reload(
    hub: Hub, context: BrowserContext
) -> None:
    page = context.new_page()
    errors = Errors(page)
    page.goto(f"{hub.api_url}/")
    expect(page.locator("#live-status")).to_have_text("live", timeout=SEEN_MS)
    # a reload would clear this: it is still there after the incident shows up
    page.evaluate("window.__stillTheSamePage = true")
    with Burst(hub, "web-live"):
        wait_until(lambda: hub.open_incident("web-live") is not None, "an incident in PostgreSQL")
        incident = hub.open_incident("web-live")
        row = page.locator(f'#open-incidents tr[data-incident-id="{incident}"]')
        expect(row).to_be_visible(timeout=SEEN_MS)
    expect(row).to_contain_text("web-live")
    expect(row.locator(".status")).to_have_text("open")
    assert page.evaluate("window.__stillTheSamePage") is True
    expect(page.locator('#services tr[data-service="web-live"]')).to_be_visible(timeout=SEEN_MS)
    expect(page.locator('#services tr[data-service="web-live"] svg').first).to_be_visible()
    _shoot(page, "now")
    assert errors.seen == []


def test_the_incident_page_shows_the_chart_and_timeline_and_acknowledges(
    hub: Hub, context: BrowserContext
) -> None:
    incident = incident_from_burst(hub, "web-ack")
    page = context.new_page()
    errors = Errors(page)
    # a shared link opens that incident
    page.goto(f"{hub.api_url}/incidents/{incident}")
    expect(page.locator("#incident-status")).to_have_text("open", timeout=SEEN_MS)
    chart = page.locator("#incident-chart svg")
    expect(chart).to_be_visible(timeout=SEEN_MS)
    expect(chart.locator(".threshold")).to_have_count(1)
    expect(chart.locator(".mark-open")).to_have_count(1)
    expect(page.locator('#timeline li[data-event-type="opened"]')).to_have_count(1)
    events_before = hub.query(
        "SELECT count(*) FROM incident_events WHERE incident_id = %s", (incident,)
    )[0][0]

    page.locator("#action-acknowledge").click()
    expect(page.locator("#incident-status")).to_have_text("investigating", timeout=SEEN_MS)
    assert hub.query("SELECT status FROM incidents WHERE id = %s", (incident,)) == [
        ("investigating",)
    ]
    rows = hub.query(
        "SELECT actor, from_status FROM incident_events WHERE incident_id = %s "
        "AND to_status = 'investigating'",
        (incident,),
    )
    assert rows == [("local-admin", "open")]
    assert (
        hub.query("SELECT count(*) FROM incident_events WHERE incident_id = %s", (incident,))[0][0]
        > events_before
    )
    # the page shows the new timeline row, from the stream or its own refetch
    expect(page.locator('#timeline li[data-event-type="status_changed"]')).to_have_count(
        1, timeout=SEEN_MS
    )
    _shoot(page, "incident")
    page.set_viewport_size(PHONE)
    _shoot(page, "incident-phone")
    assert errors.seen == []


def test_a_silence_made_in_the_page_mutes_the_next_notification(
    hub: Hub, context: BrowserContext
) -> None:
    incident = incident_from_burst(hub, "web-quiet")
    # the opening notification went out before any silence
    wait_until(
        lambda: (
            hub.query(
                "SELECT status FROM alert_notifications WHERE incident_id = %s AND event = 'open'",
                (incident,),
            )
            == [("sent",)]
        ),
        "the open notification sent",
    )
    page = context.new_page()
    errors = Errors(page)
    page.goto(f"{hub.api_url}/incidents/{incident}")
    expect(page.locator("#incident-status")).to_have_text("open", timeout=SEEN_MS)
    page.locator("#action-silence").click()
    page.locator("#silence-comment").fill("muted from the browser test")
    page.locator("#silence-submit").click()
    expect(page.locator("#silence-result")).to_contain_text("silenced", timeout=SEEN_MS)
    silences = hub.query(
        "SELECT matchers->>'service', created_by, comment FROM silences "
        "WHERE comment = 'muted from the browser test'"
    )
    assert silences == [("web-quiet", "local-admin", "muted from the browser test")]

    page.locator("#action-resolve").click()
    expect(page.locator("#incident-status")).to_have_text("resolved", timeout=SEEN_MS)
    wait_until(
        lambda: (
            hub.query(
                "SELECT status FROM alert_notifications "
                "WHERE incident_id = %s AND event = 'resolve'",
                (incident,),
            )
            == [("suppressed",)]
        ),
        "the resolve notification suppressed",
    )
    keys = {
        r[0]
        for r in hub.query(
            "SELECT idempotency_key FROM alert_notifications WHERE incident_id = %s", (incident,)
        )
    }
    arrived = set(hub.receiver.arrivals) & keys
    assert len(arrived) == 1  # the open notification only
    assert errors.seen == []


def test_a_rule_with_an_invalid_threshold_shows_the_apis_message_at_the_field(
    hub: Hub, context: BrowserContext
) -> None:
    page = context.new_page()
    errors = Errors(page, expected=(422,))
    page.goto(f"{hub.api_url}/rules/{RULE}")
    threshold = page.locator('#rule-form [name="threshold"]')
    expect(threshold).to_have_value("0.05", timeout=SEEN_MS)
    # hysteresis on the wrong side: the engine's validator refuses it
    page.locator('#rule-form [name="recovery_threshold"]').fill("0.2")
    threshold.fill("0.1")
    page.locator("#rule-save").click()
    with _api(hub) as client:
        rule = client.get(f"/api/v1/rules/{RULE}").json()
        body = {
            k: v
            for k, v in rule.items()
            if k not in {"id", "created_at", "updated_at", "managed_by"}
        }
        answer = client.put(
            f"/api/v1/rules/{RULE}", json={**body, "threshold": 0.1, "recovery_threshold": 0.2}
        )
    assert answer.status_code == 422, answer.text
    message = answer.json()["errors"][0]
    assert message["field"] == "recovery_threshold"
    shown = page.locator('.field-error[data-field="recovery_threshold"]')
    expect(shown).to_have_text(message["message"], timeout=SEEN_MS)
    # now the threshold itself: emptied, the API's word for it appears next to it
    threshold.fill("")
    page.locator('#rule-form [name="recovery_threshold"]').fill("")
    page.locator("#rule-save").click()
    expect(page.locator('.field-error[data-field="threshold"]')).not_to_be_empty(timeout=SEEN_MS)
    assert hub.query("SELECT threshold FROM alert_rules WHERE name = %s", (RULE,)) == [(0.05,)]
    _shoot(page, "rule-edit")
    assert errors.seen == []


# --- every page, the keyboard, the URL ----------------------------------------------------------
PAGES = {
    "now": "/",
    "incidents": "/incidents",
    "rules": "/rules",
    "silences": "/silences",
    "channels": "/channels",
    "notifications": "/notifications",
    "events": "/events?service=web-live",
    "dead-letters": "/dead-letters",
}


def test_every_page_renders_without_errors_on_a_desktop_and_a_phone(
    hub: Hub, context: BrowserContext
) -> None:
    page = context.new_page()
    errors = Errors(page)
    elsewhere: list[str] = []
    page.on(
        "request",
        lambda r: None if r.url.startswith((hub.api_url, "data:")) else elsewhere.append(r.url),
    )
    for name, path in PAGES.items():
        for size, viewport in (("", DESKTOP), ("-phone", PHONE)):
            page.set_viewport_size(viewport)
            page.goto(f"{hub.api_url}{path}")
            expect(page.locator("main h1, main h2").first).to_be_visible(timeout=SEEN_MS)
            page.wait_for_load_state("networkidle")
            # nothing wider than the screen: tables scroll inside their own box
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 1, f"{path} is {overflow} px wider than a {viewport} screen"
            if name != "now" or size:
                _shoot(page, f"{name}{size}")
    assert errors.seen == []
    assert elsewhere == []  # every script, style, font and call goes to the hub itself


def test_channels_send_test_answers_with_the_receiver(hub: Hub, context: BrowserContext) -> None:
    page = context.new_page()
    page.goto(f"{hub.api_url}/channels")
    row = page.locator(f'#channels tr[data-channel="{CHANNEL}"]')
    prefix = f"rtmh:test:{CHANNEL}:"

    def tests_received() -> int:
        # the receiver also gets the other tests' incident notifications: count test sends only
        return sum(1 for key in list(hub.receiver.arrivals) if key.startswith(prefix))

    before = tests_received()
    row.locator("button.send-test").click()
    expect(row.locator(".test-result")).to_contain_text("200", timeout=SEEN_MS)
    assert tests_received() == before + 1


def test_the_keyboard_moves_between_pages_and_a_reload_keeps_the_state(
    hub: Hub, context: BrowserContext
) -> None:
    page = context.new_page()
    page.goto(f"{hub.api_url}/")
    expect(page.locator("#live-status")).to_be_visible(timeout=SEEN_MS)
    page.keyboard.press("g")
    page.keyboard.press("r")
    expect(page).to_have_url(f"{hub.api_url}/rules", timeout=SEEN_MS)
    expect(page.locator("#rules")).to_contain_text(RULE, timeout=SEEN_MS)
    page.keyboard.press("g")
    page.keyboard.press("e")
    expect(page).to_have_url(f"{hub.api_url}/events", timeout=SEEN_MS)
    page.keyboard.press("/")
    focused = page.evaluate("document.activeElement && document.activeElement.tagName")
    assert focused in ("INPUT", "SELECT")
    page.locator('[name="service"]').fill("web-live")
    page.locator('[name="service"]').press("Enter")
    expect(page).to_have_url(f"{hub.api_url}/events?service=web-live", timeout=SEEN_MS)
    page.reload()
    expect(page.locator('[name="service"]')).to_have_value("web-live", timeout=SEEN_MS)


def test_signing_out_goes_to_the_sign_in_page_and_a_used_link_says_so(
    hub: Hub, browser: Browser
) -> None:
    context = browser.new_context(viewport=DESKTOP)
    try:
        page = context.new_page()
        page.goto(hub.login_link)  # used by the signed_in fixture already
        expect(page.locator("#login-form")).to_be_visible(timeout=SEEN_MS)
        expect(page.locator("main")).to_contain_text("rtmh dashboard", timeout=SEEN_MS)
        page.locator("#login-token").fill(hub.token)
        page.locator("#login-form button[type=submit]").click()
        expect(page.locator("#live-status")).to_be_visible(timeout=SEEN_MS)
        _shoot(page, "after-sign-in")
    finally:
        context.close()
