"""The page at /: self-contained (its Content-Security-Policy admits only its own inline script and
style), and in a real browser (headless Chromium) a photo picked in the file input shows the top-5
classes the API gives and a Grad-CAM heat map that loads. The API docs at /docs (Swagger UI) load
from the server alone."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


@contextmanager
def browser_page(url: str) -> Iterator[tuple[Any, list[str], list[str]]]:
    """A headless Chromium page at `url`, with the URLs it requests and the errors it reports."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} not found: the browser tests need Debian's Chromium; run `make browser`.")
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(url)
            yield page, requests, problems
        finally:
            browser.close()


def test_a_photo_picked_in_a_browser_shows_the_top_5_and_its_heat_map(server):
    with server.client() as client:
        expected = client.post("/predict", files={"file": ("chelsea.png", CHELSEA.read_bytes())}).json()["top"]
    with browser_page(server.url) as (page, requests, problems):
        page.wait_for_function("() => document.getElementById('model').textContent === 'resnet20'")
        page.set_input_files("#file", str(CHELSEA))
        page.wait_for_function("() => document.querySelectorAll('#top li').length === 5")
        rows = page.eval_on_selector_all("#top li", "items => items.map(li => [li.querySelector('.name')"
                                                    ".textContent, li.querySelector('.p').textContent])")
        page.wait_for_function("() => document.getElementById('heatmap').naturalWidth > 0")
        heat_map = page.eval_on_selector("#heatmap", "img => [img.naturalWidth, img.naturalHeight]")
        photo = page.eval_on_selector("#photo", "img => [img.complete, img.naturalWidth]")
        status = page.text_content("#status")
    assert rows == [[e["name"], f"{100 * e['probability']:.1f}%"] for e in expected]
    assert heat_map == [32, 32] and photo == [True, 451]
    assert status == f"resnet20: {expected[0]['name']}"
    assert not problems, problems  # no script error, no resource the policy refused
    assert all(url.startswith((server.url, "blob:", "data:")) for url in requests), requests


def test_the_api_docs_load_from_the_server_itself(server):
    with server.client() as client:
        page = client.get("/docs")
        assert page.status_code == 200 and "https://" not in page.text  # no CDN
        files = re.findall(r'(?:src|href)="(/docs/files/[^"]+)"', page.text)
        assert sorted(name.rsplit("/", 1)[1] for name in files) == ["favicon.png", "swagger-ui-bundle.js",
                                                                   "swagger-ui.css"]
        for name in files:
            assert client.get(name).status_code == 200, name
        assert client.get("/redoc").status_code == 404  # ReDoc's page would fetch its logo from the web
    # in a browser with nothing beyond the server to reach, Swagger UI lists the schema's three paths
    with browser_page(server.url + "docs") as (page, requests, problems):
        page.wait_for_function("() => document.querySelectorAll('.opblock-summary-path').length >= 3",
                               timeout=60_000)
        paths = page.eval_on_selector_all(".opblock-summary-path", "nodes => nodes.map(n => n.textContent)")
        title = page.text_content(".info .title")
    assert sorted(path.replace("\u200b", "") for path in paths) == ["/", "/health", "/predict"]
    assert title.startswith("dcnn: resnet20")
    assert all(url.startswith((server.url, "data:", "blob:")) for url in requests), requests
    assert not problems, problems
