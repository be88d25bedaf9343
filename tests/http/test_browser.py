"""The web view in a real browser: Debian's chromium, headless, driven over the
DevTools protocol.  It loads the pages, follows their links, downloads a file
and compares its bytes, previews text and an image, and saves screenshots into
the test's tmp dir (`screens/`)."""

from __future__ import annotations

import time

import pytest


def click(browser, selector: str) -> str:
    """Follow the first link matching `selector` (a real click); its href."""
    href = browser.js(f"document.querySelector({selector!r}).href")
    assert href, selector
    browser.events.clear()
    browser.js(f"document.querySelector({selector!r}).click()")
    browser.wait_event("Page.loadEventFired")
    return href


def page_ok(browser) -> dict:
    """What every page must be: no script, nothing wider than the window."""
    info = browser.js(
        "({title: document.title, scripts: document.scripts.length,"
        " wide: document.documentElement.scrollWidth > window.innerWidth + 1,"
        " text: document.body.innerText})"
    )
    assert info["scripts"] == 0 and not info["wide"], info["title"]
    return info


@pytest.mark.slow
def test_browse_download_preview(sample, httpd, browser, tmp_path):
    url = httpd({"": sample.store})
    shots = tmp_path / "screens"
    shots.mkdir()
    browser.goto(url)
    info = page_ok(browser)
    assert info["title"] == "Stores" and "proj" in info["text"]
    browser.screenshot(shots / "1-stores.png")

    click(browser, 'a[href="/a/"]')
    assert "proj" in page_ok(browser)["text"]
    click(browser, 'a[href="/a/proj/"]')
    info = page_ok(browser)
    assert info["title"] == "History of proj"
    assert "second" in info["text"] and "first" in info["text"] and "MiB" in info["text"]
    png = browser.screenshot(shots / "2-history.png")
    assert png.startswith(b"\x89PNG")

    click(browser, 'a[href$="diff?from="], a[href*="/diff?"]')
    info = page_ok(browser)
    assert "new.txt" in info["text"] and "a.txt" in info["text"]
    browser.screenshot(shots / "3-changes.png")

    browser.goto(url + "a/proj/latest/")
    info = page_ok(browser)
    for name in ("a.txt", "big.bin", "sub/", "dot.png"):
        assert name in info["text"]
    browser.screenshot(shots / "4-listing.png")

    # a text preview, then an image preview that really decodes
    click(browser, 'a[href$="a.txt?view"]')
    assert "changed" in page_ok(browser)["text"]
    browser.goto(url + "a/proj/latest/dot.png?view")
    assert browser.js("document.querySelector('img.preview').naturalWidth") == 1
    browser.screenshot(shots / "5-preview.png")

    # download a file by its link and compare the bytes
    browser.goto(url + "a/proj/latest/")
    browser.js("document.querySelector('a[href$=\"big.bin?download\"]').click()")
    browser.wait_event(
        "Browser.downloadProgress", timeout=60, where=lambda p: p.get("state") == "completed"
    )
    got = browser.downloads / "big.bin"
    deadline = time.monotonic() + 10
    while not got.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got.read_bytes() == sample.big

    # into a subdirectory and back up by the breadcrumbs
    browser.goto(url + "a/proj/latest/")
    click(browser, 'a[href$="/sub/"]')
    assert "s.txt" in page_ok(browser)["text"]
    click(browser, ".crumbs a:last-of-type")
    assert "big.bin" in page_ok(browser)["text"]
    assert len(list(shots.glob("*.png"))) == 5
