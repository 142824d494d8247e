"""The chat page at ``/`` in a real headless Chromium: type a message, watch the reply stream in, see the
token count. Needs Playwright for Python and Debian's chromium (skipped without them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.serving import Knowledge, ServeOptions, SlowFake, serving

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs chromium (apt-get install chromium)")


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def test_a_person_chats_and_sees_the_reply_stream_in_with_its_tokens(browser, tmp_path):
    faq = tmp_path / "faq.md"
    faq.write_text("# Returns\n\nItems can be returned within 30 days with the receipt.\n\n# Opening hours\n\n"
                   "The shop opens at 9 and closes at 18, Monday to Saturday.\n", encoding="utf-8")
    fake = SlowFake(delay=0.08)
    fake.enqueue("We open at 9 in the morning and close at 18, from Monday to Saturday. Anything else?")
    knowledge = Knowledge([faq], fake.text_counter("fake-model"))
    options = ServeOptions(system_prompt="You are the friendly assistant of the Corner Shop.")
    with serving(fake, options, knowledge=knowledge) as server:
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        page.goto(server.url + "/")
        page.wait_for_function("document.getElementById('model').textContent.includes('fake-model')")
        assert page.input_value("#system") == "You are the friendly assistant of the Corner Shop."
        assert "faq.md" in page.text_content("#knowledge-files")
        page.fill("#message", "When do you open?")
        page.press("#message", "Enter")
        reply = page.locator(".msg.assistant .reply")
        page.wait_for_function("document.querySelector('.msg.assistant .reply')?.textContent.length > 5")
        partial = reply.text_content()
        page.wait_for_selector(".msg.assistant .usage", timeout=20_000)
        final = reply.text_content()
        assert final == "We open at 9 in the morning and close at 18, from Monday to Saturday. Anything else?"
        assert len(partial) < len(final)  # seen while it was still being written
        usage = page.text_content(".msg.assistant .usage")
        assert "prompt" in usage and "completion tokens" in usage
        sent = fake.history[-1].messages
        assert sent[0].role == "system" and "Corner Shop" in sent[0].content
        assert "9 and closes at 18" in sent[0].content  # grounded on the passage that matches the question
        page.fill("#message", "Thanks!")
        page.press("#message", "Enter")
        page.wait_for_function("document.querySelectorAll('.msg.assistant .usage').length == 2", timeout=20_000)
        assert len(fake.history[-1].messages) == 4  # system, the first question, its answer, the thanks
        page.screenshot(path=str(tmp_path / "chat.png"))
        assert (tmp_path / "chat.png").stat().st_size > 10_000
