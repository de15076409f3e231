"""The playground in a real browser (Debian's Chromium through Playwright) against a real `counterpoint serve` on
the tiny model: two panes stream one prompt under plain and dola, dola's changed tokens are highlighted with the
original view's own choice, server errors reach the person, feedback lands in the outcome log, the API key flow
works, and axe-core finds no serious accessibility problem. The run saves docs/playground.png for the README."""

from __future__ import annotations

import base64
import re
import sqlite3

import httpx

from .conftest import REPO, open_page

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture reports it: a failure in CI, a skip elsewhere
    expect = None

PROMPT = "Tell me a story about the sea."
MAX_TOKENS = 12


def ask(page, prompt: str = PROMPT, max_tokens: int = MAX_TOKENS) -> None:
    page.fill("#max-tokens", str(max_tokens))
    page.fill("#prompt", prompt)
    page.click("#send")
    expect(page.locator("#status")).to_contain_text("Done", timeout=60_000)


def pane(page, i: int):
    return page.locator(".pane").nth(i)


def api_answer(served, decoding: dict) -> dict:
    body = {"model": "tiny", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS,
            "temperature": 0, "decoding": {**decoding, "diagnostics": True}}
    r = httpx.post(f"{served.url}/v1/chat/completions", json=body, timeout=60,
                   headers={"authorization": f"Bearer {served.key}"})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


def test_two_panes_stream_and_the_contrast_is_highlighted(page, served):
    page.select_option("#pane-0-method", "method:plain")
    page.select_option("#pane-1-method", "method:dola")
    ask(page)
    plain, dola = api_answer(served, {"method": "plain"}), api_answer(served, {"method": "dola"})
    assert pane(page, 0).locator(".msg.assistant").inner_text() == plain["message"]["content"]
    assert pane(page, 1).locator(".msg.assistant").inner_text() == dola["message"]["content"]
    expect(page.locator("#status")).to_have_text("Done.")
    assert pane(page, 0).locator(".tok").count() > 1 and pane(page, 1).locator(".tok").count() > 1  # streamed
    assert pane(page, 0).locator(".tok.changed").count() == 0  # plain has no contrast view
    changed = pane(page, 1).locator(".tok.changed")
    diag = dola["diagnostics"]
    assert diag["changed_tokens"] > 0 and changed.count() > 0  # dola on the 2-layer model changes tokens
    tooltip = changed.first.get_attribute("title")
    assert re.match(r'Changed: the original view alone would have chosen ".*" \(id \d+\) instead of', tooltip)
    assert 0 < float(changed.first.evaluate("e => getComputedStyle(e).getPropertyValue('--heat')")) <= 1
    changed.first.click()  # a tap shows the same words where there is no hover
    expect(pane(page, 1).locator(".token-info")).to_have_text(tooltip)
    stats = pane(page, 1).locator(".stats")
    expect(stats).to_contain_text(f"Contrast changed {diag['changed_tokens']} of {diag['tokens']} tokens")
    expect(stats).to_contain_text('dola; decided {"candidate_layers":[1]')
    expect(stats.locator("dd").nth(0)).to_have_text(re.compile(r"^\d+\.\d\d s$"))  # time to first token
    expect(stats.locator("dd").nth(1)).to_have_text(re.compile(r"^\d+\.\d tokens/s$"))
    expect(pane(page, 0).locator(".stats")).to_contain_text("No contrast view")
    assert page.errors == []  # no console error: no CSP violation, no failed request, no script error
    page.screenshot(path=str(REPO / "docs" / "playground.png"), full_page=True)


def test_a_bad_parameter_is_shown_to_the_person(page):
    page.select_option("#pane-1-method", "method:dola")
    page.click("#pane-1-title ~ details summary")
    page.fill("#pane-1-dola-alpha", "5")
    ask(page)
    alert = pane(page, 1).get_by_role("alert")
    expect(alert).to_contain_text("invalid dola parameters")
    expect(alert).to_contain_text("alpha")
    assert pane(page, 0).locator(".msg.assistant").inner_text()  # the other pane still answered
    expect(page.locator("#status")).to_contain_text("some panes have no answer")


def test_feedback_is_recorded_for_an_experiment_answer(page, served):
    page.select_option("#pane-1-method", "experiment:contrast-ab")
    ask(page)
    expect(pane(page, 1).locator(".stats")).to_contain_text("(experiment contrast-ab, arm ")
    with page.expect_response("**/v1/feedback") as response:
        pane(page, 1).get_by_role("button", name="Good answer").click()
    assert response.value.status == 200
    expect(pane(page, 1).locator(".feedback")).to_contain_text("Feedback saved.")
    completion_id = response.value.json()["completion_id"]
    with sqlite3.connect(served.db) as db:
        row = db.execute("SELECT c.experiment, c.arm, f.score FROM feedback f JOIN completions c "
                         "ON c.id = f.completion_id WHERE f.completion_id = ?", (completion_id,)).fetchone()
    assert row[0] == "contrast-ab" and row[1] in ("plain", "dola") and row[2] == 1.0
    assert page.errors == []


def test_the_api_key_is_asked_for_and_kept_for_the_tab(browser, served):
    page = open_page(browser, served.url)
    assert page.response.status == 200  # the page itself needs no key
    expect(page.get_by_role("alert")).to_contain_text("This server needs an API key")
    page.fill("#api-key", "wrong")
    page.click("text=Use key")
    expect(page.get_by_role("alert")).to_contain_text("Incorrect API key")
    page.fill("#api-key", served.key)
    page.click("text=Use key")
    expect(page.locator("#status")).to_contain_text("Ready")
    page.reload()
    expect(page.locator("#status")).to_contain_text("Ready")  # sessionStorage keeps it for this tab
    assert page.evaluate("sessionStorage.getItem('counterpoint.apiKey')") == served.key
    page.context.close()


def test_accessibility_and_phone_width(browser, served, axe_source):
    page = open_page(browser, served.url, served.key, width=390)  # a phone's width
    expect(page.locator("#status")).to_contain_text("Ready")
    ask(page, max_tokens=6)  # check the page with answers, highlights and feedback buttons in it
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scrolling
    page.evaluate(axe_source)  # DevTools evaluation: not subject to the page's CSP
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    serious = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]]) for v in result["violations"]
               if v["impact"] in ("serious", "critical")]
    assert serious == []
    page.context.close()


def test_images_are_sent_as_data_urls(page, tmp_path):
    from PIL import Image
    Image.new("RGB", (8, 8), "red").save(tmp_path / "red.png")
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "blue.jpg")
    page.set_input_files("#image-input", str(tmp_path / "red.png"))  # attached
    page.eval_on_selector("#prompt", """(el, b64) => {  // pasted
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], 'pasted.jpg', {type: 'image/jpeg'}));
        el.dispatchEvent(new ClipboardEvent('paste', {clipboardData: data, bubbles: true}));
    }""", base64.b64encode((tmp_path / "blue.jpg").read_bytes()).decode())
    expect(page.locator("#images img")).to_have_count(2)
    with page.expect_request("**/v1/chat/completions") as request:
        ask(page, prompt="What is in the picture?")
    parts = request.value.post_data_json["messages"][-1]["content"]
    assert parts[0] == {"type": "text", "text": "What is in the picture?"}
    assert [p["image_url"]["url"][:22] for p in parts[1:]] == ["data:image/png;base64,", "data:image/jpeg;base64"]
    expect(pane(page, 0).get_by_role("alert")).to_contain_text("does not accept images")  # the tiny model has no vision
