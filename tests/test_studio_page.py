"""The studio page in headless Chromium (selenium; .ci/run installs chromium and chromium-driver)
against a real server with the demo model: a control for every setting, the page's pixels equal
`llmdit generate`'s, reuse after a restart, rewriting, a vision upload, img2img, cancel, no
console errors, and a phone's width without sideways scrolling.

With STUDIO_SCREENSHOTS=FOLDER the tests save the page at desktop and phone width there (the
README's and docs/serve.md's screenshots)."""

import base64
import os
import time
from pathlib import Path

import pytest
from helpers import Server, chromium, pixels

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "recipes" / "images" / "vl-reference.png"
TOKEN = "page-token"
PROMPT = "a red circle on a blue background"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("studio-data")


def start_server(data_dir) -> Server:
    return Server("--model", "demo", "--data-dir", str(data_dir), token=TOKEN)


@pytest.fixture(scope="module")
def server(data_dir):
    s = start_server(data_dir)
    yield s
    s.stop()


@pytest.fixture
def page(server):
    """The page open and ready: the token given (as localStorage keeps it), the form built."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium()
    driver.get(server.url + "/")
    driver.execute_script("localStorage.setItem('llmdit-token', arguments[0])", TOKEN)
    driver.get(server.url + "/")
    WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.CSS_SELECTOR, "body[data-ready]")))
    assert driver.find_element(By.ID, "model").text == "demo"
    yield driver
    driver.quit()


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def setting(driver, key):
    from selenium.webdriver.common.by import By

    el = driver.find_element(By.CSS_SELECTOR, f'[data-setting="{key}"]')
    driver.execute_script("const d = arguments[0].closest('details'); if (d) d.open = true;", el)
    return el


def set_setting(driver, key, value) -> None:
    from selenium.webdriver.support.ui import Select

    el = setting(driver, key)
    if el.tag_name == "select":
        Select(el).select_by_value(str(value))
    elif el.get_attribute("type") == "range":
        driver.execute_script(
            "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'))", el, str(value)
        )
    elif el.get_attribute("type") == "file":
        el.send_keys(str(value))
    else:
        el.clear()
        el.send_keys(str(value))


def generate(driver, timeout=120):
    """Click Generate; the finished image's PNG bytes as the page shows them."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.CSS_SELECTOR, 'img[data-role="result"]').get_attribute("src")
    driver.find_element(By.CSS_SELECTOR, '[data-action="generate"]').click()
    WebDriverWait(driver, timeout).until(
        lambda d: (
            d.find_element(By.CSS_SELECTOR, 'img[data-role="result"]').get_attribute("src") not in (old, None, "")
            or d.find_element(By.ID, "error").is_displayed()
        )
    )
    assert not driver.find_element(By.ID, "error").is_displayed(), driver.find_element(By.ID, "error").text
    WebDriverWait(driver, 10).until(
        lambda d: not d.find_element(By.CSS_SELECTOR, '[data-role="progress"]').is_displayed()
    )  # the spinner goes when the result is there
    src = driver.find_element(By.CSS_SELECTOR, 'img[data-role="result"]').get_attribute("src")
    data = driver.execute_async_script(
        """const done = arguments[arguments.length - 1];
        fetch(arguments[0]).then(r => r.arrayBuffer()).then(b => {
          let s = ""; for (const x of new Uint8Array(b)) s += String.fromCharCode(x); done(btoa(s)); });""",
        src,
    )
    return base64.b64decode(data)


def newest(server, task=None) -> dict:
    query = f"?limit=1&task={task}" if task else "?limit=1"
    return server.json("GET", "/v1/llmdit/history" + query)[1]["data"][0]


def screenshot(driver, name) -> None:
    folder = os.environ.get("STUDIO_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(Path(folder) / name))


NINE = {
    "seed": ("9", "--seed"),
    "generation.steps": ("3", "--steps"),
    "generation.guidance_scale": ("1.5", "--guidance-scale"),
    "generation.negative_prompt": ("blurry", "--negative-prompt"),
    "scheduler.shift": ("2.5", "--shift"),
    "slg.scale": ("1.5", "--slg-scale"),
    "slg.layers": ("1", "--slg-layers"),
    "encoder.hidden_layer": ("-3", "--hidden-layer"),
    "encoder.template": ("low-poly-faceted", "--template"),
}


def test_every_setting_has_a_control_and_nine_settings_give_the_cli_pixels(page, server, cli, tmp_path):
    from selenium.webdriver.common.by import By

    keys = [s["key"] for s in server.json("GET", "/v1/llmdit/settings")[1]["data"]]
    for key in keys:
        assert page.find_elements(By.CSS_SELECTOR, f'[data-setting="{key}"]'), key
    page.find_element(By.ID, "prompt").send_keys(PROMPT)
    for key, (value, _) in NINE.items():
        set_setting(page, key, value)
    png = generate(page)
    (tmp_path / "page.png").write_bytes(png)
    flags = [x for value, flag in NINE.values() for x in (flag, value)]
    r = cli("generate", PROMPT, "--model", "demo", *flags, "-o", tmp_path / "cli.png")
    assert r.code == 0, r.stderr
    assert (pixels(tmp_path / "page.png") == pixels(tmp_path / "cli.png")).all()
    assert console_errors(page) == []
    screenshot(page, "studio-desktop.png")
    page.set_window_size(390, 844)
    time.sleep(0.3)
    width = page.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], width  # no sideways scrolling at a phone's width
    screenshot(page, "studio-phone.png")


def test_reuse_after_a_restart_gives_the_same_pixels(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    data_dir = tmp_path / "data"
    first_server = start_server(data_dir)
    try:
        body = {"prompt": PROMPT, "size": "48x32", "llmdit": {"seed": 77, "steps": 3, "slg_scale": 2.0, "shift": 2.0}}
        status, reply = first_server.json("POST", "/v1/images/generations", body)
    finally:
        first_server.stop()
    assert status == 200, reply
    first, entry_id = base64.b64decode(reply["data"][0]["b64_json"]), reply["data"][0]["llmdit"]["history"]
    again = start_server(data_dir)  # a new process on the same data folder
    try:
        driver = chromium()
        try:
            driver.get(again.url + "/")
            driver.execute_script("localStorage.setItem('llmdit-token', arguments[0])", TOKEN)
            driver.get(again.url + "/")
            item = f'[data-history-id="{entry_id}"] [data-action="reuse"]'
            WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, item))
            driver.find_element(By.CSS_SELECTOR, item).click()
            assert setting(driver, "generation.steps").get_attribute("value") == "3"
            assert setting(driver, "seed").get_attribute("value") == "77"
            assert driver.find_element(By.ID, "prompt").get_attribute("value") == PROMPT
            (tmp_path / "again.png").write_bytes(generate(driver))
            (tmp_path / "first.png").write_bytes(first)
            assert (pixels(tmp_path / "again.png") == pixels(tmp_path / "first.png")).all()
            assert console_errors(driver) == []
        finally:
            driver.quit()
    finally:
        again.stop()


def test_rewriter_vision_img2img_and_cancel_from_the_page(page, server, cli, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    # rewriting: the rewrite replaces the prompt; the original is in the history
    prompt = page.find_element(By.ID, "prompt")
    prompt.send_keys("red circle")
    page.execute_script("document.querySelector('[data-role=\"rewriter\"]').open = true")
    Select(page.find_element(By.CSS_SELECTOR, '[data-role="rewriter-template"]')).select_by_value("demo-caption")
    page.find_element(By.CSS_SELECTOR, '[data-action="rewrite"]').click()
    WebDriverWait(page, 60).until(lambda d: prompt.get_attribute("value") != "red circle")
    entry = newest(server, "rewrite")
    assert entry["prompt"] == "red circle" and entry["result"] == prompt.get_attribute("value")

    # a vision image, uploaded, with the alpha slider and a blend mode = --vl-image
    prompt.clear()
    prompt.send_keys(PROMPT)
    for key, value in (("seed", 5), ("vl.image", REFERENCE), ("vl.alpha", 0.7), ("vl.blend_mode", "adain")):
        set_setting(page, key, value)
    (tmp_path / "vl-page.png").write_bytes(generate(page))
    args = ["--vl-image", REFERENCE, "--vl-alpha", "0.7", "--vl-blend-mode", "adain", "--seed", "5"]
    assert cli("generate", PROMPT, "--model", "demo", *args, "-o", tmp_path / "vl-cli.png").code == 0
    assert (pixels(tmp_path / "vl-page.png") == pixels(tmp_path / "vl-cli.png")).all()
    page.find_element(By.CSS_SELECTOR, '[data-action="reset"]').click()

    # img2img from an upload, with strength = llmdit img2img
    source = tmp_path / "vl-cli.png"
    page.execute_script("document.querySelector('[data-role=\"img2img\"]').open = true")
    page.find_element(By.CSS_SELECTOR, '[data-role="init-image"]').send_keys(str(source))
    WebDriverWait(page, 10).until(
        lambda d: d.find_element(By.CSS_SELECTOR, '[data-role="init-preview"]').is_displayed()
    )
    for key, value in (("seed", 6), ("generation.strength", 0.5), ("generation.steps", 4)):
        set_setting(page, key, value)
    (tmp_path / "i2i-page.png").write_bytes(generate(page))
    r = cli(
        "img2img", PROMPT, "--image", source, "--model", "demo", "--seed", "6", "--strength", "0.5", "--steps", "4",
        "-o", tmp_path / "i2i-cli.png",
    )  # fmt: skip
    assert r.code == 0, r.stderr
    assert (pixels(tmp_path / "i2i-page.png") == pixels(tmp_path / "i2i-cli.png")).all()
    assert newest(server)["task"] == "img2img"
    page.find_element(By.CSS_SELECTOR, '[data-action="clear-input"]').click()

    # cancel: a long job stops, the spinner goes, nothing is recorded
    before = newest(server)["id"]
    for key, value in (("generation.steps", 100), ("generation.width", 256), ("generation.height", 256)):
        set_setting(page, key, value)
    page.find_element(By.CSS_SELECTOR, '[data-action="generate"]').click()
    status = page.find_element(By.CSS_SELECTOR, '[data-role="status"]')
    WebDriverWait(page, 60).until(lambda d: "step" in status.text)
    page.find_element(By.CSS_SELECTOR, '[data-action="cancel"]').click()
    error = page.find_element(By.ID, "error")
    WebDriverWait(page, 60).until(lambda d: error.is_displayed())
    assert "cancelled" in error.text
    WebDriverWait(page, 10).until(
        lambda d: not d.find_element(By.CSS_SELECTOR, '[data-role="progress"]').is_displayed()
    )
    assert newest(server)["id"] == before
    assert console_errors(page) == []


def test_history_filters_and_delete_on_the_page(page, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    status, reply = server.json("POST", "/v1/images/generations", {"prompt": "to delete", "llmdit": {"seed": 1}})
    entry_id = reply["data"][0]["llmdit"]["history"]
    page.refresh()
    item = f'[data-history-id="{entry_id}"]'
    WebDriverWait(page, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, item))
    Select(page.find_element(By.CSS_SELECTOR, '[data-role="history-task"]')).select_by_value("rewrite")
    WebDriverWait(page, 10).until(lambda d: not d.find_elements(By.CSS_SELECTOR, item))
    tasks = {li.get_attribute("data-task") for li in page.find_elements(By.CSS_SELECTOR, "[data-history-id]")}
    assert tasks <= {"rewrite"}
    Select(page.find_element(By.CSS_SELECTOR, '[data-role="history-task"]')).select_by_value("")
    WebDriverWait(page, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, item))
    page.find_element(By.CSS_SELECTOR, f'{item} [data-action="delete"]').click()
    WebDriverWait(page, 10).until(lambda d: not d.find_elements(By.CSS_SELECTOR, item))
    assert server.json("GET", f"/v1/llmdit/history/{entry_id}")[0] == 404
    assert console_errors(page) == []


def test_the_page_works_by_keyboard(page, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    def newest_id():  # None while the history is empty (an earlier test may have emptied it)
        data = server.json("GET", "/v1/llmdit/history?limit=1")[1]["data"]
        return data[0]["id"] if data else None

    before = newest_id()
    prompt = page.find_element(By.ID, "prompt")
    prompt.click()
    prompt.send_keys("a keyboard circle")
    reached = None
    for _ in range(200):  # bounded: Tab through the form until Generate has the focus
        page.switch_to.active_element.send_keys(Keys.TAB)
        reached = page.switch_to.active_element
        if reached.get_attribute("data-action") == "generate":
            break
    assert reached is not None and reached.get_attribute("data-action") == "generate"
    reached.send_keys(Keys.ENTER)
    WebDriverWait(page, 120).until(lambda d: newest_id() not in (None, before))
    assert newest(server)["prompt"] == "a keyboard circle"
