"""The chat page (/ui) in a real browser: Debian's Chromium driven by Playwright, against real `faisca serve`s.

Each test leaves one screenshot (its page at the end, failed or not) in test-artifacts/chat-page/ (or
$FAISCA_TEST_ARTIFACTS/chat-page/), named after the test; the folder is printed at the end of the run. A page error or
a console error (a Content-Security-Policy violation is one) fails the test.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import GEMMA, SCREENSHOTS, SMOLLM2, RunningServer, serving, vision_args
from tests.pictures import png
from tests.projector import TOKENS_PER_IMAGE

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (scripts/install test)")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("no Chromium: scripts/install test installs Debian's `chromium` where apt is at hand",
                allow_module_level=True)

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
VISION = "gemma3-vision"
VISION_KEY = "page-test-key-0123456789"
ANSWER = ".msg.assistant:last-child"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_page(browser: object, request: pytest.FixtureRequest, viewport: dict[str, int]) -> Iterator[object]:
    context = browser.new_context(viewport=viewport, device_scale_factor=1)  # type: ignore[attr-defined]
    page = context.new_page()
    page.set_default_timeout(60_000)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))

    def on_console(message: object) -> None:
        if message.type == "error" and "status of 401" not in message.text:  # a 401 is the key test's first answer
            problems.append(f"console: {message.text}")

    page.on("console", on_console)
    try:
        yield page
    finally:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{request.node.name}.png"))
        context.close()
    assert not problems, problems


@pytest.fixture
def page(browser: object, request: pytest.FixtureRequest) -> Iterator[object]:
    yield from open_page(browser, request, DESKTOP)


@pytest.fixture
def phone(browser: object, request: pytest.FixtureRequest) -> Iterator[object]:
    yield from open_page(browser, request, PHONE)


def requests_running(server: RunningServer) -> float:
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("faisca_requests_running{"))


def pick(page: object, model: str, *, max_tokens: int | None = None) -> None:
    page.wait_for_selector(f'#model option[value="{model}"]', state="attached")
    page.select_option("#model", model)
    if max_tokens is not None:
        page.click("#toggle-settings")
        page.fill("#max_tokens", str(max_tokens))
        page.click("#close-settings")


def say(page: object, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def finished_stats(page: object) -> str:
    page.wait_for_selector("#send", state="visible", timeout=120_000)
    return page.locator(f"{ANSWER} .stats").inner_text()


def test_a_browser_gets_the_page_at_the_root_and_an_answer_streams_with_its_speed_and_cached_tokens(
        page: object, server: RunningServer) -> None:
    page.goto(f"{server.base_url}/")  # a browser asks for text/html: the page, not "faisca is running"
    pick(page, SMOLLM2)
    assert "disabled" in page.get_attribute("#attach", "class")  # SmolLM2 reads no pictures
    pick(page, GEMMA, max_tokens=48)
    assert re.fullmatch(r"\d+K context", page.inner_text("#caps"))  # neither pictures nor tools
    say(page, "Write a short poem about the sea.")
    # streamed: text is on the page while the answer is still running (the Stop button is up)
    page.wait_for_function("""() => {
        const answer = document.querySelector('.msg.assistant:last-child .markdown');
        return answer && answer.textContent.trim().length > 0 && !document.getElementById('stop').hidden;
    }""", polling="raf")
    first = finished_stats(page)
    assert re.search(r"\d+ tokens · [\d.]+ tok/s · prompt \d+ \(\d+ cached\)", first), first
    say(page, "Another one, please.")
    second = finished_stats(page)
    cached = int(re.search(r"\((\d+) cached\)", second).group(1))
    assert cached > 0, second  # the first turn's prompt is reused from the cache
    assert page.locator(".msg.assistant").count() == 2


def test_stop_ends_the_generation_on_the_server(page: object, server: RunningServer) -> None:
    def without_eos(route: object) -> None:  # a long answer for sure: the stop must come mid-answer
        body = json.loads(route.request.post_data)
        route.continue_(post_data=json.dumps({**body, "ignore_eos": True}))

    page.route("**/v1/chat/completions", without_eos)
    page.goto(f"{server.base_url}/ui")
    pick(page, GEMMA, max_tokens=1500)
    say(page, "Count from one to one thousand.")
    page.wait_for_function("() => (document.querySelector('.msg.assistant:last-child .markdown')?.textContent || '')"
                           ".length > 40")
    assert requests_running(server) == 1
    page.click("#stop")
    deadline = time.monotonic() + 10
    while requests_running(server) != 0:
        assert time.monotonic() < deadline, "the generation went on after Stop"
        time.sleep(0.1)
    page.wait_for_selector("#send", state="visible")
    assert "stopped" in page.locator(f"{ANSWER} .stats").inner_text()
    text = page.locator(f"{ANSWER} .markdown").inner_text()
    time.sleep(0.5)
    assert page.locator(f"{ANSWER} .markdown").inner_text() == text


HOSTILE = ('Here is **bold**, *italic* and `code <b>`.\n\n<img src=x onerror="window.pwned=1">\n\n'
           '- one\n- two [safe](https://example.com/a) [bad](javascript:window.pwned=2)\n\n'
           '```html\n<script>window.pwned=3</script>\n```\n\n| a | b |\n|---|---|\n| 1 | <i>2</i> |\n')


def sse(*chunks: dict[str, object]) -> str:
    return "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"


def test_markdown_and_tool_calls_are_rendered_as_nodes_never_as_html(page: object, server: RunningServer) -> None:
    pieces = [HOSTILE[i:i + 7] for i in range(0, len(HOSTILE), 7)]  # split anywhere, as tokens are
    call = {"index": 0, "id": "abcDEF123", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    body = sse(*[{"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]} for piece in pieces],
               {"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]},
               {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {
                   "arguments": '{"city": "Lisbon"}'}}]}, "finish_reason": "tool_calls"}]},
               {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42,
                                         "prompt_tokens_details": {"cached_tokens": 8}}})
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"}, body=body))
    page.goto(f"{server.base_url}/ui")
    pick(page, GEMMA)
    say(page, "Show me some Markdown.")
    assert "prompt 12 (8 cached)" in finished_stats(page)
    answer = page.locator(f"{ANSWER} .markdown")
    assert page.evaluate("() => window.pwned") is None
    assert answer.locator("img, script, b, i").count() == 0
    assert '<img src=x onerror="window.pwned=1">' in answer.inner_text()
    assert answer.locator("strong").inner_text() == "bold" and answer.locator("em").inner_text() == "italic"
    assert answer.locator("li").count() == 2
    links = answer.locator("a")
    assert links.count() == 1 and links.get_attribute("href") == "https://example.com/a"
    assert "noopener" in links.get_attribute("rel")
    assert answer.locator("pre code.language-html").inner_text() == "<script>window.pwned=3</script>"
    assert answer.locator("td").nth(1).inner_text() == "<i>2</i>"
    tool = page.locator(f"{ANSWER} .tool-call")
    assert "get_weather" in tool.inner_text() and '"city": "Lisbon"' in tool.inner_text()


def test_conversations_are_kept_in_the_browser_across_a_reload(page: object, server: RunningServer) -> None:
    page.goto(f"{server.base_url}/ui")
    pick(page, SMOLLM2, max_tokens=8)
    page.click("#toggle-settings")
    page.fill("#system", "You answer in one short sentence.")
    page.click("#close-settings")
    say(page, "What is the capital of France?")
    finished_stats(page)
    page.click("#new-chat")
    say(page, "Name a colour.")
    finished_stats(page)
    page.reload()
    titles = page.locator(".conversation .open")
    assert titles.all_inner_texts() == ["Name a colour.", "What is the capital of France?"]
    page.click("text=What is the capital of France?")
    assert page.locator(".msg.user").inner_text() == "What is the capital of France?"
    assert page.locator(".msg.assistant .stats").inner_text()
    assert page.input_value("#system") == "You answer in one short sentence."
    assert page.input_value("#model") == SMOLLM2


def test_on_a_phone_the_drawers_fold_away_and_nothing_overflows(phone: object, server: RunningServer) -> None:
    phone.goto(f"{server.base_url}/ui")
    pick(phone, SMOLLM2, max_tokens=24)
    assert not phone.is_visible("#sidebar .new-chat")
    say(phone, "Write a Python function that adds two numbers, in a code block.")
    finished_stats(phone)
    assert phone.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    phone.click("#toggle-sidebar")
    phone.wait_for_selector("#sidebar .new-chat", state="visible")
    phone.click("#scrim")
    phone.wait_for_selector("#sidebar .new-chat", state="hidden")


@pytest.fixture(scope="module")
def vision_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    directory = tmp_path_factory.mktemp("page-vision")
    with serving(directory, *vision_args(directory, VISION), "--ctx-size", "2048", "--max-num-seqs", "2", "--api-key", VISION_KEY) as running:
        yield running


def test_with_a_key_pictures_attached_by_picker_paste_and_drop_reach_a_vision_model(
        page: object, vision_server: RunningServer) -> None:
    page.goto(f"{vision_server.base_url}/ui")  # no key needed for the page itself
    page.wait_for_selector("#notice:has-text('API key')")
    page.fill("#api-key", VISION_KEY)
    page.press("#api-key", "Tab")  # kept in localStorage, sent as a Bearer key from now on
    pick(page, VISION, max_tokens=6)
    assert "images" in page.inner_text("#caps")
    page.set_input_files("#file", files=[{"name": "red.png", "mimeType": "image/png", "buffer": png((220, 20, 20))}])
    blue = base64.b64encode(png((20, 40, 220))).decode()
    green = base64.b64encode(png((20, 200, 60), (200, 300))).decode()
    page.evaluate("""([blue, green]) => {
        const file = (b64, name) => new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], name, {type: 'image/png'});
        const pasted = new DataTransfer();
        pasted.items.add(file(blue, 'blue.png'));
        document.getElementById('prompt').dispatchEvent(new ClipboardEvent('paste', {clipboardData: pasted, bubbles: true}));
        const dropped = new DataTransfer();
        dropped.items.add(file(green, 'green.png'));
        document.getElementById('messages').dispatchEvent(new DragEvent('drop', {dataTransfer: dropped, bubbles: true}));
    }""", [blue, green])
    page.wait_for_function("() => document.querySelectorAll('#attachments img').length === 3")
    say(page, "What colours are these pictures?")
    stats = finished_stats(page)
    prompt_tokens = int(re.search(r"prompt (\d+)", stats).group(1))
    assert prompt_tokens > 3 * TOKENS_PER_IMAGE, stats
    assert page.locator(".msg.user .pictures img").count() == 3
    assert page.locator(f"{ANSWER} .error").count() == 0
