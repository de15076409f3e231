"""A real `counterpoint serve` (tiny model, API key, outcome log, one A/B experiment) and Debian's Chromium driven by
Playwright. Outside CI a missing browser, Playwright or axe-core skips the browser tests; in CI (`CI` set) it fails
them, since `.ci/run` installs all three."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import free_port, start_serve

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
AXE = Path(os.environ.get("AXE_CORE_JS", REPO / ".ci/npm/node_modules/axe-core/axe.min.js"))
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]
KEY = "playground-key"
CONFIG = """
[experiments.contrast-ab]
arms = [{name = "plain", decoding = "plain"}, {name = "dola", decoding = {method = "dola"}}]
"""


def missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what}; .ci/run installs it")
    pytest.skip(f"{what} (set CI=1 to make this a failure)")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_llama_dir):
    tmp = tmp_path_factory.mktemp("playground")
    config, db = tmp / "counterpoint.toml", tmp / "outcomes.db"
    config.write_text(f"outcome_log = {str(db)!r}\n{CONFIG}")
    port = free_port()
    proc = start_serve(["--config", str(config), "--model", str(tiny_llama_dir), "--served-model-name", "tiny",
                        "--worker-port", str(free_port()), "--threads", "1", "--kv-cache-gb", "0.05",
                        "--api-key", KEY, "--shutdown-grace", "1"], port, tmp / "serve.log", timeout=180)
    yield SimpleNamespace(url=f"http://127.0.0.1:{port}", db=db, key=KEY)
    proc.terminate()
    proc.wait(timeout=60)


@pytest.fixture(scope="module")
def browser():  # module scope: Playwright's sync API holds an event loop in this thread while it runs
    if not CHROMIUM.exists():
        missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright for Python is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def axe_source() -> str:
    if not AXE.exists():
        missing(f"no axe-core at {AXE} (npm install --prefix .ci/npm axe-core)")
    return AXE.read_text()


def open_page(browser, url: str, key: str | None = None, width: int = 1280):
    """A fresh tab on the playground; console errors and page errors are collected in `page.errors`."""
    context = browser.new_context(viewport={"width": width, "height": 900})
    if key is not None:  # as if the person had entered it earlier in this tab
        context.add_init_script(f"sessionStorage.setItem('counterpoint.apiKey', {key!r})")
    page = context.new_page()
    page.errors = []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.response = page.goto(f"{url}/playground")
    return page


@pytest.fixture()
def page(browser, served):
    """The playground with the API key already in the tab's session storage, loaded and ready."""
    from playwright.sync_api import expect
    page = open_page(browser, served.url, served.key)
    expect(page.locator("#status")).to_contain_text("Ready")
    yield page
    page.context.close()
