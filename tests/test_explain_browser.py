"""The explain page in a real headless Chromium: slots are all there, and hovering or clicking one lights its tokens.

Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them) and selenium (the
`dev` extra); without them the test is skipped, saying which is missing. The network is
closed here, so Chromium runs with everything that would call home switched off.
"""

import io
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from comprexit import ComprExIT, ComprExITConfig
from comprexit.reader import Reader
from comprexit.reporting import explain_text, write_page
from comprexit.reporting.explain_page import page_data

from tiny import tiny_backbone

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1200,900",
)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no Chromium to test the explain page in: apt-get install chromium chromium-driver",
)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """An explain page of a four-chunk document, from a tiny backbone with a non-uniform sender capacity."""
    backbone = tiny_backbone("llama")
    torch.manual_seed(0)
    compressor = ComprExIT.for_backbone(backbone, ComprExITConfig(window=16))
    with torch.no_grad():
        compressor.width.capacity.weight.normal_(0, 0.3)
    reader = Reader(backbone, compressor, chunk_tokens=48, compressor_name="tiny")
    explanation = explain_text(reader, "The lighthouse keeper, Thomas Reed, left in 1989.\n" * 3)
    folder = tmp_path_factory.mktemp("page")
    write_page(explanation, folder / "plan.html", folder / "plan-plan.png", folder / "plan-layers.png", "doc.txt")
    return folder / "plan.html", explanation


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def drawn_tokens(browser) -> set[int]:
    return {int(el.get_attribute("data-token")) for el in browser.find_elements("css selector", ".tok.drawn")}


def background(browser, token: int) -> str:
    element = browser.find_element("css selector", f'.tok[data-token="{token}"]')
    return browser.execute_script("return getComputedStyle(arguments[0]).backgroundColor", element)


def screenshot(browser, path: Path):
    from PIL import Image

    png = browser.get_screenshot_as_png()
    path.write_bytes(png)
    return Image.open(io.BytesIO(png)).convert("RGB")


def test_hovering_and_clicking_a_slot_highlights_its_tokens(page, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    path, explanation = page
    browser.get(path.as_uri())
    slots = browser.find_elements("css selector", ".slot")
    assert len(slots) == explanation.num_slots == 38  # 3 x 48 + 6 tokens: 3 x 12 slots + 2, numbered globally
    assert [int(s.get_attribute("data-slot")) for s in slots] == list(range(explanation.num_slots))
    assert len(browser.find_elements("css selector", ".tok")) == explanation.num_tokens
    before = screenshot(browser, tmp_path / "before.png")
    assert drawn_tokens(browser) == set()

    slot = 17  # chunk 1, so the global numbering and the token offsets of later chunks are exercised
    sources = page_data(explanation)["sources"][slot]
    expected = {token for token, _ in sources}
    assert len(expected) > 1 and min(expected) >= 48
    top, quiet = sources[0][0], next(t for t in range(explanation.num_tokens) if t not in expected)
    resting = background(browser, top)

    ActionChains(browser).move_to_element(slots[slot]).perform()
    after = screenshot(browser, tmp_path / "hover.png")
    assert drawn_tokens(browser) == expected
    assert background(browser, top) != resting  # shaded by the plan now, not by capacity
    assert background(browser, quiet) == "rgba(0, 0, 0, 0)"  # tokens the slot does not draw from lose their shade
    assert f"Slot {slot} (chunk 1" in browser.find_element("id", "slot-info").text
    assert after.size == before.size and after.tobytes() != before.tobytes()

    heading = browser.find_element("tag name", "h1")
    ActionChains(browser).move_to_element(heading).perform()
    assert drawn_tokens(browser) == set()  # hover alone does not stay
    ActionChains(browser).click(slots[slot]).move_to_element(heading).perform()
    assert drawn_tokens(browser) == expected  # a click pins the slot
    ActionChains(browser).click(slots[slot]).move_to_element(heading).perform()
    assert drawn_tokens(browser) == set()  # a second click releases it
