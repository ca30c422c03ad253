"""The page at /: self-contained (its Content-Security-Policy admits only its own inline script and
style), and in a real browser (headless Chromium) a photo picked in the file input shows the top-5
classes the API gives and a Grad-CAM heat map that loads."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest

from tests.conftest import data_dir

CHELSEA = data_dir() / "images" / "chelsea.png"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def test_the_page_is_self_contained_and_its_policy_admits_its_own_script_and_style(server):
    with server.client() as client:
        response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page, policy = response.text, response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    for tag in ("script", "style"):
        [inline] = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.S)
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in policy
    assert not re.search(r"<[^>]*\s(src|href)\s*=|https?://|@import|url\(", page)  # nothing fetched elsewhere


def test_a_photo_picked_in_a_browser_shows_the_top_5_and_its_heat_map(server):
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} not found: the browser tests need Debian's Chromium; run `make browser`.")
    from playwright.sync_api import sync_playwright

    with server.client() as client:
        expected = client.post("/predict", files={"file": ("chelsea.png", CHELSEA.read_bytes())}).json()["top"]
    requests, problems = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(server.url)
            page.wait_for_function("() => document.getElementById('model').textContent === 'resnet20'")
            page.set_input_files("#file", str(CHELSEA))
            page.wait_for_function("() => document.querySelectorAll('#top li').length === 5")
            rows = page.eval_on_selector_all("#top li", "items => items.map(li => [li.querySelector('.name')"
                                                        ".textContent, li.querySelector('.p').textContent])")
            page.wait_for_function("() => document.getElementById('heatmap').naturalWidth > 0")
            heat_map = page.eval_on_selector("#heatmap", "img => [img.naturalWidth, img.naturalHeight]")
            photo = page.eval_on_selector("#photo", "img => [img.complete, img.naturalWidth]")
            status = page.text_content("#status")
        finally:
            browser.close()
    assert rows == [[e["name"], f"{100 * e['probability']:.1f}%"] for e in expected]
    assert heat_map == [32, 32] and photo == [True, 451]
    assert status == f"resnet20: {expected[0]['name']}"
    assert not problems, problems  # no script error, no resource the policy refused
    assert all(url.startswith((server.url, "blob:", "data:")) for url in requests), requests
