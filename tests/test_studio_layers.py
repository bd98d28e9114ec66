"""Layers over HTTP on tiny Qwen-Image-Layered and Edit-Plus folders: decompose = `llmdit
decompose` (which equals diffusers' stock pipeline, tests/test_layer_commands.py), edit =
`llmdit edit-layer`, restack and hide, revert, exports, the history, bad input."""

import json
import shutil
import time
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from helpers import Server
from PIL import Image
from test_layer_commands import STEPS, built_once, decompose_into, make_models

TOKEN = "layers-token"
SETTINGS = {"layered_layers": 3, "layered_steps": STEPS, "seed": 11, "prompt": "a red box on blue"}


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    root = built_once(tmp_path_factory, "qwen-models", make_models)
    return {"layered": root / "layered", "edit": root / "edit", "image": root / "img.png"}


@pytest.fixture(scope="module")
def decomposed(qwen, tmp_path_factory):
    return built_once(tmp_path_factory, "qwen-decomposed", lambda root: decompose_into(root, qwen))


@pytest.fixture(scope="module")
def server(qwen, tmp_path_factory):
    data = tmp_path_factory.mktemp("layers-data")
    s = Server(
        "--model", "demo", "--data-dir", str(data), "--layered-model", str(qwen["layered"]),
        "--edit-model", str(qwen["edit"]), token=TOKEN,
    )  # fmt: skip
    s.data = data
    yield s
    s.stop()


def multipart(fields: dict, files: dict) -> tuple[bytes, dict]:
    boundary = "llmdit-test-boundary"
    out = BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, data in files.items():
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
            f"Content-Type: image/png\r\n\r\n".encode()
        )
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def wait_job(server, job_id, timeout=180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # bounded
        job = server.json("GET", f"/v1/llmdit/jobs/{job_id}")[1]
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def decompose(server, qwen, settings=SETTINGS) -> str:
    raw, headers = multipart({"llmdit": json.dumps(settings)}, {"image": qwen["image"].read_bytes()})
    status, data, _ = server.request("POST", "/v1/llmdit/decompose", raw=raw, headers=headers)
    assert status == 202, data
    job = wait_job(server, json.loads(data)["job"])
    assert job["state"] == "done", job
    return job["result"]["stack"]


def rgba_of(server, url) -> np.ndarray:
    status, data, _ = server.request("GET", url)
    assert status == 200, data
    with Image.open(BytesIO(data)) as im:
        assert im.mode == "RGBA"
        return np.asarray(im).copy()


def rgba(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGBA")).copy()


@pytest.fixture(scope="module")
def stack_id(server, qwen):
    return decompose(server, qwen)


def test_decompose_over_http_equals_the_cli(server, stack_id, decomposed, cli):
    status, stack = server.json("GET", f"/v1/llmdit/stacks/{stack_id}")
    assert status == 200, stack
    assert len(stack["layers"]) == 3
    for layer in stack["layers"]:
        assert np.array_equal(rgba_of(server, layer["url"]), rgba(decomposed / "layers" / layer["file"]))
    assert np.array_equal(rgba_of(server, stack["composite_url"]), rgba(decomposed / "layers" / "composite.png"))
    cli_record = json.loads((decomposed / "layers" / "layers.json").read_text())
    assert stack["record"]["settings"] == cli_record["settings"]
    folder = server.data / "stacks" / stack_id
    r = cli("inspect", folder)
    assert r.code == 0, r.stderr
    entry = server.json("GET", f"/v1/llmdit/history/{stack_id}")[1]
    assert entry["task"] == "decompose" and entry["stack"] == stack_id and entry["seed"] == 11


def test_edit_over_http_equals_edit_layer_and_revert_restores(server, qwen, decomposed, cli, tmp_path):
    stack_id = decompose(server, qwen)
    body = {"layer": 1, "instruction": "make it blue", "llmdit": {"layered_steps": STEPS, "seed": 5}}
    status, started = server.json("POST", f"/v1/llmdit/stacks/{stack_id}/edit", body)
    assert status == 202, started
    again = server.json("POST", f"/v1/llmdit/stacks/{stack_id}/edit", body)
    assert again[0] == 409 and "being edited" in again[1]["error"]["message"]  # one edit of a stack at a time
    job = wait_job(server, started["job"])
    assert job["state"] == "done", job
    assert job["result"]["kept"] == "layer_01.v1.png"
    folder = shutil.copytree(decomposed / "layers", tmp_path / "layers")
    r = cli(
        "edit-layer", folder, "--layer", "1", "make it blue", "--edit-model", qwen["edit"], "--steps", STEPS,
        "--seed", "5",
    )  # fmt: skip
    assert r.code == 0, r.stderr
    stack = server.json("GET", f"/v1/llmdit/stacks/{stack_id}")[1]
    edited = rgba_of(server, stack["layers"][1]["url"])
    assert np.array_equal(edited, rgba(folder / "layer_01.png"))
    before = rgba(decomposed / "layers" / "layer_01.png")
    assert np.array_equal(edited[..., 3], before[..., 3])  # alpha exact
    (version,) = stack["layers"][1]["versions"]
    assert np.array_equal(rgba_of(server, version["url"]), before)  # the previous version kept
    entry = server.json("GET", f"/v1/llmdit/history/{job['result']['history']}")[1]
    assert entry["task"] == "edit" and entry["parent"] == stack_id and entry["prompt"] == "make it blue"
    status, stack = server.json("POST", f"/v1/llmdit/stacks/{stack_id}/revert", {"layer": 1, "version": 1})
    assert status == 200, stack
    assert np.array_equal(rgba_of(server, stack["layers"][1]["url"]), before)
    assert [v["version"] for v in stack["layers"][1]["versions"]] == [1, 2]  # the edit is kept too


def test_restack_and_hide_change_the_composite(server, stack_id):
    status, stack = server.json("POST", f"/v1/llmdit/stacks/{stack_id}/restack", {"order": [2, 0, 1], "hidden": [0]})
    assert status == 200, stack
    assert stack["order"] == [2, 0, 1] and stack["hidden"] == [0]
    layers = [Image.fromarray(rgba_of(server, layer["url"])) for layer in stack["layers"]]
    canvas = Image.new("RGBA", layers[0].size, (0, 0, 0, 0))
    for i in (2, 1):  # the order, bottom first, without the hidden layer 0
        canvas = Image.alpha_composite(canvas, layers[i])
    assert np.array_equal(rgba_of(server, stack["composite_url"]), np.asarray(canvas))
    status, stack = server.json("POST", f"/v1/llmdit/stacks/{stack_id}/restack", {"order": [0, 1, 2], "hidden": []})
    assert status == 200 and stack["hidden"] == []


def test_exports_are_valid(server, stack_id):
    status, data, headers = server.request("GET", f"/v1/llmdit/stacks/{stack_id}/export?format=ora")
    assert status == 200 and headers["content-type"] == "image/openraster"
    with zipfile.ZipFile(BytesIO(data)) as z:
        first = z.infolist()[0]
        assert first.filename == "mimetype" and first.compress_type == zipfile.ZIP_STORED
        assert z.read("mimetype") == b"image/openraster"
        assert "stack.xml" in z.namelist()
    status, data, _ = server.request("GET", f"/v1/llmdit/stacks/{stack_id}/export?format=tiff")
    assert status == 200
    with Image.open(BytesIO(data)) as im:
        assert im.format == "TIFF" and im.n_frames >= 3
    status, data, _ = server.request("GET", f"/v1/llmdit/stacks/{stack_id}/export?format=zip")
    with zipfile.ZipFile(BytesIO(data)) as z:
        names = {Path(n).name for n in z.namelist()}
    assert {"layers.json", "layer_00.png", "composite.png"} <= names
    assert server.request("GET", f"/v1/llmdit/stacks/{stack_id}/export?format=psd")[0] == 400


def test_bad_layer_requests_are_refused_naming_the_field(server, stack_id, qwen):
    raw, headers = multipart({"llmdit": "{}"}, {"image": b"not an image"})
    status, data, _ = server.request("POST", "/v1/llmdit/decompose", raw=raw, headers=headers)
    assert status == 400 and json.loads(data)["error"]["param"] == "image"
    raw, headers = multipart({"llmdit": json.dumps({"layered_layers": 11})}, {"image": qwen["image"].read_bytes()})
    status, data, _ = server.request("POST", "/v1/llmdit/decompose", raw=raw, headers=headers)
    assert status == 400 and json.loads(data)["error"]["param"] == "llmdit.layered_layers", data
    raw, headers = multipart({"llmdit": json.dumps({"layered_model": "x/y"})}, {"image": qwen["image"].read_bytes()})
    assert server.request("POST", "/v1/llmdit/decompose", raw=raw, headers=headers)[0] == 400
    status, reply = server.json("POST", f"/v1/llmdit/stacks/{stack_id}/edit", {"layer": 7, "instruction": "x"})
    assert status == 400 and reply["error"]["param"] == "layer"
    status, reply = server.json("POST", f"/v1/llmdit/stacks/{stack_id}/restack", {"order": [0, 0, 1]})
    assert status == 400 and reply["error"]["param"] == "order"
    status, reply = server.json("POST", f"/v1/llmdit/stacks/{stack_id}/revert", {"layer": 0, "version": 9})
    assert status == 400 and reply["error"]["param"] == "version"
    assert server.json("GET", "/v1/llmdit/stacks/0123456789abcdef0123")[0] == 404
    assert server.request("GET", f"/v1/llmdit/stacks/{stack_id}/files/layers.json")[0] == 404  # files the record names
    assert server.request("GET", f"/v1/llmdit/stacks/{stack_id}/files/..%2Flayers.json")[0] == 404


def test_deleting_a_stack_removes_its_folder_and_entry(server, qwen):
    stack_id = decompose(server, qwen, {**SETTINGS, "seed": 3})
    folder = server.data / "stacks" / stack_id
    assert folder.is_dir()
    assert server.json("DELETE", f"/v1/llmdit/stacks/{stack_id}")[0] == 200
    assert not folder.exists()
    assert server.json("GET", f"/v1/llmdit/stacks/{stack_id}")[0] == 404
    assert server.json("GET", f"/v1/llmdit/history/{stack_id}")[0] == 404


def test_the_layers_view_hides_edits_and_reverts_in_chromium(server, qwen):
    from helpers import chromium
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = chromium()

    def shown(css) -> bytes:
        """The bytes of the image an <img> shows (a blob URL the page made)."""
        src = driver.find_element(By.CSS_SELECTOR, css).get_attribute("src")
        b64 = driver.execute_async_script(
            """const done = arguments[arguments.length - 1];
            fetch(arguments[0]).then(r => r.arrayBuffer()).then(b => {
              let s = ""; for (const x of new Uint8Array(b)) s += String.fromCharCode(x); done(btoa(s)); });""",
            src,
        )
        import base64

        return base64.b64decode(b64)

    try:
        driver.get(server.url + "/")
        driver.execute_script("localStorage.setItem('llmdit-token', arguments[0])", TOKEN)
        driver.get(server.url + "/")
        WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.CSS_SELECTOR, "body[data-ready]")))
        # decompose from the page: the image, a prompt, the Layers panel's settings and the seed
        driver.execute_script("document.querySelector('[data-role=\"layers\"]').open = true")
        driver.find_element(By.CSS_SELECTOR, '[data-role="decompose-image"]').send_keys(str(qwen["image"]))
        driver.find_element(By.CSS_SELECTOR, '[data-role="decompose-prompt"]').send_keys(SETTINGS["prompt"])
        for key, value in (("layered.layers", "3"), ("layered.steps", str(STEPS)), ("seed", "21")):
            el = driver.find_element(By.CSS_SELECTOR, f'[data-setting="{key}"]')
            driver.execute_script("arguments[0].closest('details').open = true", el)
            if el.tag_name == "select":
                Select(el).select_by_value(value)
            else:
                el.send_keys(value)
        driver.find_element(By.CSS_SELECTOR, '[data-action="decompose"]').click()
        WebDriverWait(driver, 120).until(lambda d: "stack=" in d.current_url)
        stack_id = driver.current_url.split("stack=")[1]
        entry = server.json("GET", f"/v1/llmdit/history/{stack_id}")[1]
        assert entry["task"] == "decompose" and entry["seed"] == 21 and entry["settings"]["layers"] == 3
        driver.get(f"{server.url}/?stack={stack_id}")  # a stack's own address opens it
        WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.CSS_SELECTOR, "body[data-ready]")))
        tiles = driver.find_elements(By.CSS_SELECTOR, "[data-layer-index]")
        assert sorted(int(t.get_attribute("data-layer-index")) for t in tiles) == [0, 1, 2]
        WebDriverWait(driver, 10).until(lambda d: shown('img[data-role="composite"]'))
        before = shown('img[data-role="composite"]')
        driver.find_element(By.CSS_SELECTOR, '[data-layer-index="2"] [data-action="toggle-visibility"]').click()
        WebDriverWait(driver, 30).until(lambda d: shown('img[data-role="composite"]') != before)
        assert server.json("GET", f"/v1/llmdit/stacks/{stack_id}")[1]["hidden"] == [2]

        layer_css = '[data-layer-index="1"] img'
        original = shown(layer_css)
        driver.find_element(By.CSS_SELECTOR, '[data-layer-index="1"] [data-action="edit-layer"]').click()
        dialog = driver.find_element(By.CSS_SELECTOR, '[data-role="edit-dialog"]')
        assert dialog.is_displayed()
        dialog.find_element(By.CSS_SELECTOR, '[data-role="edit-instruction"]').send_keys("make it blue")
        dialog.find_element(By.CSS_SELECTOR, '[data-role="edit-steps"]').send_keys(str(STEPS))
        dialog.find_element(By.CSS_SELECTOR, '[data-role="edit-seed"]').send_keys("5")
        dialog.find_element(By.CSS_SELECTOR, '[data-action="run-edit"]').click()
        revert = '[data-role="versions"] [data-action="revert"][data-version="1"]'
        WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, revert))
        assert "done" in dialog.find_element(By.CSS_SELECTOR, '[data-role="edit-status"]').text
        WebDriverWait(driver, 10).until(lambda d: shown(layer_css) != original)  # the new version shows
        driver.find_element(By.CSS_SELECTOR, revert).click()
        WebDriverWait(driver, 30).until(lambda d: shown(layer_css) == original)  # the old one is back
        assert console_errors_of(driver) == []
    finally:
        driver.quit()


def console_errors_of(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
