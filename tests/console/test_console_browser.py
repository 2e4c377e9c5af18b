"""The console in a real headless Chromium (selenium + the system's chromedriver): two real nodes
over a real mosquitto, each with its own console process."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.render import EXERCISE_MARKER
from relay.sim.broker import Mosquitto
from tests.console.util import PASSWORD, add_user, nodes_with_consoles, start_console
from tests.drill.test_report_browser import FLAGS, png_pixels

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = [pytest.mark.broker, pytest.mark.subprocess]

MARKER_RGB = bytes.fromhex("ffd400")  # the marker's yellow in console.css
SHOTS_ENV = "CONSOLE_SCREENSHOTS_DIR"  # set to keep the screenshots (docs/img is made this way)
TEXT = "Evacueer de wijk Lombok via de Kanaalweg; opvang in sporthal De Vliert."


def waiting(driver: WebDriver, timeout: float, poll_frequency: float = 0.1) -> WebDriverWait:  # type: ignore[type-arg]
    """A wait that looks again when a live update replaced the element it was reading."""
    return WebDriverWait(
        driver, timeout, poll_frequency, ignored_exceptions=(StaleElementReferenceException,)
    )


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_exe = shutil.which("chromedriver")
    if chromium is None or driver_exe is None:
        pytest.skip("chromium and chromedriver are needed: deploy/dev-setup.sh installs them")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in (*FLAGS, "--window-size=1100,900", "--lang=nl-NL"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_exe), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def login(driver: WebDriver, base: str, user: str) -> None:
    driver.get(base + "/login")
    driver.find_element(By.NAME, "user").send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    waiting(driver, 20).until(lambda d: d.current_url.endswith("/inbox"))


def foreign_loads(driver: WebDriver, base: str) -> list[str]:
    """Every URL the page loaded (document and resources) that is not on the console's origin."""
    urls: list[str] = driver.execute_script(
        "return performance.getEntries().map(e => e.name).filter(n => n.includes('://'))"
    )
    return [u for u in urls if not u.startswith(base + "/")]


def page_weight(driver: WebDriver) -> int:
    """Bytes of the document and every resource it loaded (decoded sizes)."""
    sizes: list[int] = driver.execute_script(
        "return performance.getEntries().filter(e => e.decodedBodySize !== undefined)"
        ".map(e => e.decodedBodySize)"
    )
    return sum(sizes)


def screenshot(driver: WebDriver, tmp: Path, name: str) -> Path:
    """Save a screenshot and check that it is not blank and shows the exercise marker."""
    path = tmp / f"console-{name}.png"
    path.write_bytes(driver.get_screenshot_as_png())
    w, h, pixels = png_pixels(path.read_bytes())
    assert w > 500 and h > 400, (w, h)
    assert len(pixels) > 50, f"{name}: only {len(pixels)} distinct colours: a blank page?"
    assert MARKER_RGB in pixels, f"{name}: no pixel in the exercise marker's yellow"
    keep = os.environ.get(SHOTS_ENV)
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)
    return path


def visible_marker(driver: WebDriver) -> bool:
    return any(el.is_displayed() for el in driver.find_elements(By.CSS_SELECTOR, ".marker"))


def state_of(driver: WebDriver, node: str) -> str:
    cells = driver.find_elements(By.CSS_SELECTOR, f'tr[data-node="{node}"] [data-state]')
    return cells[0].text if cells else ""


def compose(driver: WebDriver, base: str, text: str, precedence: str = "FLASH") -> None:
    driver.get(base + "/compose")
    driver.find_element(By.CSS_SELECTOR, f'input[name="precedence"][value="{precedence}"]').click()
    driver.find_element(By.CSS_SELECTOR, 'input[name="to"][value="region:VR07"]').click()
    driver.find_element(By.ID, "text").send_keys(text)
    driver.find_element(By.ID, "exercise").click()
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    waiting(driver, 20).until(
        lambda d: (
            "past in één LoRa-bericht" in d.find_element(By.ID, "estimate").text
            and EXERCISE_MARKER in d.find_element(By.ID, "preview").text
        )
    )


def test_flash_exercise_composed_at_a_reaches_b_and_a_sees_it_received_live(
    tmp_path: Path, mosquitto: Mosquitto, browser: WebDriver
) -> None:
    """Test that a FLASH exercise sent from A's console shows at B's inbox with the marker and
    A's delivery matrix turns to 'ontvangen' for B without a reload."""
    with nodes_with_consoles(tmp_path, mosquitto, ("hq", "vr07-utrecht")) as (c, consoles):
        add_user(c, "hq", "anna", "national")
        add_user(c, "vr07-utrecht", "bart", "vr07-rbt")
        a = start_console(c, "hq", consoles).url
        b = start_console(c, "vr07-utrecht", consoles).url
        d = browser
        tab_a = d.current_window_handle
        login(d, a, "anna")
        d.switch_to.new_window("tab")
        tab_b = d.current_window_handle
        login(d, b, "bart")  # B's inbox is open (and live) before anything is sent
        assert not d.find_elements(By.CSS_SELECTOR, "tr.flash")

        d.switch_to.window(tab_a)
        compose(d, a, TEXT)
        estimate = d.find_element(By.ID, "estimate").text
        assert d.title.startswith(EXERCISE_MARKER)
        d.set_window_size(1100, 1450)  # the whole form, estimate and preview in one picture
        d.execute_script("window.scrollTo(0, 0)")
        screenshot(d, tmp_path, "compose")
        d.set_window_size(1100, 900)
        sent_at = time.monotonic()
        d.find_element(By.CSS_SELECTOR, "button.send").click()
        waiting(d, 20).until(lambda d: "/delivery" in d.current_url)
        waiting(d, 30, poll_frequency=0.05).until(
            lambda d: state_of(d, "vr07-utrecht") == "ontvangen"
        )
        received_s = time.monotonic() - sent_at
        waiting(d, 10).until(lambda d: visible_marker(d) and d.title.startswith(EXERCISE_MARKER))
        assert not foreign_loads(d, a)

        d.switch_to.window(tab_b)
        waiting(d, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "tr.flash"))
        waiting(d, 10).until(
            lambda d: (
                EXERCISE_MARKER in (row := d.find_element(By.CSS_SELECTOR, "tr.flash").text)
                and TEXT[:40] in row
            )
        )
        waiting(d, 10).until(lambda d: d.find_element(By.ID, "flash-alert").is_displayed())
        waiting(d, 10).until(lambda d: d.title.startswith(EXERCISE_MARKER))
        waiting(d, 10).until(visible_marker)
        assert not foreign_loads(d, b)
        weight = page_weight(d)
        screenshot(d, tmp_path, "inbox")

        # The live matrix: B is down when the next decision goes out, so A shows "wacht"
        # until B is back and signs; the page is never reloaded meanwhile.
        d.switch_to.window(tab_a)
        c.stop("vr07-utrecht")
        compose(d, a, "Tweede besluit: sporthal vol, uitwijken naar De Wiekslag.", "IMMEDIATE")
        d.find_element(By.CSS_SELECTOR, "button.send").click()
        waiting(d, 20).until(lambda d: "/delivery" in d.current_url)
        waiting(d, 10).until(lambda d: state_of(d, "vr07-utrecht") == "wacht")
        d.execute_script("window.__notReloaded = true")
        c.start("vr07-utrecht")
        waiting(d, 60, poll_frequency=0.1).until(
            lambda d: state_of(d, "vr07-utrecht") == "ontvangen"
        )
        assert d.execute_script("return window.__notReloaded === true"), "the page was reloaded"
        screenshot(d, tmp_path, "delivery")

        audit = [r for r in c.audit("hq") if r["event"].startswith("console-")]
        assert {(r["event"], r["node"]) for r in audit} >= {
            ("console-login", "anna"), ("console-sign", "anna"), ("console-send", "anna"),
        }  # fmt: skip
        report: dict[str, Any] = {
            "send_to_ontvangen_s": round(received_s, 2),
            "inbox_page_kb": round(weight / 1024, 1),
            "estimate": estimate,
        }
        print(f"console browser measurements: {report}")
        assert 0 < weight < 200_000, f"page weight {weight} B"
