"""The browser playground at ``/``, driven in Debian's chromium by Playwright against the shared
HTTPS stack: a form built from the endpoint's schema, an upload through fal's storage routes, a
text-to-video request followed to a playing video, and the fal_client snippet.

``REFRESH_DOCS_SCREENSHOT=1`` also writes the screenshot to docs/playground.png. Without
chromium the tests fail, unless ``SKIP_BROWSER_TESTS=1`` says this host has none on purpose.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from pipelines.cogvideox.schema import I2V_PROMPT_EXAMPLE, T2V_PROMPT_EXAMPLE
from tests.conftest import API_KEY
from tests.generated_inputs import png_bytes
from tests.stack import Stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "playground.png"
T2V = "fal-ai/cogvideox-5b"
I2V = "fal-ai/cogvideox-5b/image-to-video"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        if os.environ.get("SKIP_BROWSER_TESTS") == "1":
            pytest.skip("no chromium on this host (SKIP_BROWSER_TESTS=1)")
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (or set SKIP_BROWSER_TESTS=1)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.goto(f"{stack.base_url}/")
    opened.wait_for_selector("body[data-ready=true]")
    opened.fill("#api-key", API_KEY)
    yield opened
    context.close()


def test_the_page_and_its_assets_need_no_key(stack: Stack) -> None:
    with httpx.Client(base_url=stack.base_url, verify=stack.verify) as anonymous:
        page = anonymous.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert anonymous.get("/playground/playground.js").status_code == 200
        assert anonymous.get("/openapi.json").status_code == 200
        assert anonymous.post(f"/queue/{T2V}", json={"prompt": "x"}).status_code == 401


def test_text_to_video_from_the_form_plays_in_the_page(page: Page, stack: Stack, tmp_path: Path) -> None:
    page.select_option("#endpoint", T2V)
    # The form is the schema's: fal's example prompt, the default size, ranges from the schema.
    assert page.input_value("#field-prompt") == T2V_PROMPT_EXAMPLE
    assert page.input_value("#field-video_size") == "custom"
    assert page.input_value("#field-video_size-width") == "720"
    assert page.get_attribute("#field-num_inference_steps", "max") == "50"
    assert page.is_checked("#field-use_rife")
    assert page.locator("[data-field=loras]").count() == 0  # fal's text-to-video takes none

    page.fill("#field-video_size-width", "64")
    page.fill("#field-video_size-height", "48")
    page.fill("#field-num_inference_steps", "2")
    page.fill("#field-seed", "7")
    page.uncheck("#field-use_rife")
    page.fill("#field-export_fps", "8")
    page.click("#submit")

    page.wait_for_function(
        "() => { const v = document.querySelector('#video'); return v.readyState >= 2 && v.currentTime > 0; }",
        timeout=120_000,
    )
    assert page.text_content("#status") == "COMPLETED"
    assert "step 2/2" in page.text_content("#logs")
    assert page.eval_on_selector("#progress", "p => p.value") == 1
    result = json.loads(page.text_content("#result"))
    assert page.eval_on_selector("#video", "v => v.currentSrc") == result["video"]["url"]
    assert result["seed"] == 7 and result["prompt"] == T2V_PROMPT_EXAMPLE
    assert page.eval_on_selector("#video", "v => [v.videoWidth, v.videoHeight]") == [64, 48]

    snippet = page.text_content("#snippet")
    assert f'fal_client.subscribe(\n    "{T2V}",' in snippet
    for line in ('"video_size": {\n', '"width": 64,', '"num_inference_steps": 2,', '"use_rife": False,', '"seed": 7,'):
        assert line in snippet
    assert API_KEY not in snippet

    shot = tmp_path / "playground.png"
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("REFRESH_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(shot, DOCS_SCREENSHOT)


def test_a_picked_image_is_uploaded_and_its_url_fills_the_field(page: Page, stack: Stack) -> None:
    page.select_option("#endpoint", I2V)
    assert page.input_value("#field-prompt") == I2V_PROMPT_EXAMPLE
    picture = png_bytes((40, 30), seed=3)
    page.set_input_files(
        "[data-upload-for=image_url]", {"name": "still.png", "mimeType": "image/png", "buffer": picture}
    )
    page.wait_for_function(
        "base => document.querySelector('#field-image_url').value.startsWith(base + '/files/')",
        arg=stack.base_url,
    )
    file_url = page.input_value("#field-image_url")
    assert file_url.endswith("/still.png")
    with httpx.Client(verify=stack.verify) as anonymous:
        assert anonymous.get(file_url).content == picture
    assert f'"image_url": "{file_url}"' in page.text_content("#snippet")


def test_invalid_input_shows_the_servers_422(page: Page) -> None:
    page.select_option("#endpoint", T2V)
    page.fill("#field-num_inference_steps", "51")
    page.click("#submit")
    page.wait_for_selector("#form-error:not([hidden])")
    assert "num_inference_steps: Input should be less than or equal to 50" in page.text_content("#form-error")
    assert page.text_content("#status") == "FAILED"


def test_the_key_is_kept_in_local_storage(page: Page, stack: Stack) -> None:
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert page.input_value("#api-key") == API_KEY
