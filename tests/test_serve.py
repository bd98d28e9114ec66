"""`llmdit serve` on a real server (a subprocess on 127.0.0.1, a free port) with the demo model:
the API against the CLI (same pixels, same embeddings bytes), bad requests, auth, the queue, a
client that goes away, the web page in headless Chromium."""

import base64
import http.client
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from helpers import Server, assert_one_line_error, chromium, free_port, pixels

TOKEN = "test-token-123"
PROMPT = "a red circle on a blue background"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The demo model with a token and small limits (two waiting requests, 2 images, 64 KiB bodies)."""
    loras = tmp_path_factory.mktemp("loras")
    from helpers import make_lora

    from llmdit_cli.models import DEMO_PATH

    make_lora(DEMO_PATH, loras / "style.safetensors")
    s = Server(
        "--model", "demo", "--max-queue", "1", "--max-images", "2", "--max-body-bytes", "65536",
        "--max-prompt-chars", "500", "--max-tokens", "64", "--lora-dir", str(loras), token=TOKEN,
    )  # fmt: skip
    yield s
    s.stop()


def png_of(item) -> bytes:
    return base64.b64decode(item["b64_json"])


def test_health_models_and_status(server):
    status, health = server.json("GET", "/health", auth=False)  # open: for load balancers
    assert status == 200 and health["model"] == "demo" and health["components"] == "all"
    status, models = server.json("GET", "/v1/models")
    assert status == 200 and [m["id"] for m in models["data"]] == ["demo"]
    status, queue = server.json("GET", "/v1/llmdit/status")
    assert status == 200 and queue["max_queue"] == 1


def test_images_have_the_pixels_and_settings_of_generate(server, cli):
    body = {
        "prompt": PROMPT,
        "size": "64x48",
        "n": 2,
        "llmdit": {"seed": 7, "steps": 3, "slg_scale": 2.0, "slg-layers": "1-2", "lora": ["style.safetensors:0.7"]},
    }
    status, reply = server.json("POST", "/v1/images/generations", body)
    assert status == 200, reply
    assert [d["llmdit"]["seed"] for d in reply["data"]] == [7, 8]
    lora = str(Path(server.proc.args[server.proc.args.index("--lora-dir") + 1]) / "style.safetensors")
    r = cli(
        "generate", PROMPT, "--model", "demo", "-W", "64", "-H", "48", "--seed", "7", "--num-images", "2",
        "--steps", "3", "--slg-scale", "2.0", "--slg-layers", "1-2", "--lora", f"{lora}:0.7", "-o", "local-{seed}.png",
        "--batch-size", "4",  # the server's --max-batch: both images in one forward, as the server makes them
    )  # fmt: skip
    assert r.code == 0, r.stderr
    from llmdit_cli.pngmeta import settings_of

    for item in reply["data"]:
        local = Path(f"local-{item['llmdit']['seed']}.png")
        Path("api.png").write_bytes(png_of(item))
        assert (pixels("api.png") == pixels(local)).all()
        stored = settings_of(png_of(item), "api.png")
        assert stored == item["llmdit"]["settings"]
        # the server's paths stay on the server: a LoRA is named as the request named it
        assert stored["loras"] == ["style.safetensors:0.7"] and str(Path(lora).parent) not in json.dumps(stored)
        assert {**stored, "loras": [f"{lora}:0.7"]} == settings_of(local.read_bytes(), str(local))
        assert stored["slg_scale"] == 2.0 and stored["steps"] == 3


def test_remote_encoding_is_bit_identical(server, cli):
    key = {"LLMDIT_API_KEY": TOKEN}
    args = [PROMPT, "a green square", "--hidden-layer", "-3", "--template", "low-poly-faceted"]
    os.environ.update(key)
    try:
        remote = cli("encode", *args, "--api-url", server.url + "/v1", "-o", "remote.embeds.safetensors")
    finally:
        os.environ.pop("LLMDIT_API_KEY")
    assert remote.code == 0, remote.stderr
    local = cli("encode", *args, "--model", "demo", "-o", "local.embeds.safetensors")
    assert local.code == 0, local.stderr
    assert Path("remote.embeds.safetensors").read_bytes() == Path("local.embeds.safetensors").read_bytes()


def test_generate_with_a_remote_encoder_makes_the_same_pixels(server, cli, monkeypatch):
    monkeypatch.setenv("LLMDIT_API_KEY", TOKEN)
    common = [PROMPT, "--model", "demo", "--seed", "5", "--steps", "3", "--guidance-scale", "2.0"]
    remote = cli("generate", *common, "--encoder-url", server.url + "/v1", "-o", "remote.png")
    assert remote.code == 0, remote.stderr
    local = cli("generate", *common, "-o", "local.png")
    assert local.code == 0, local.stderr
    assert (pixels("remote.png") == pixels("local.png")).all()


def test_rewrite_talks_to_serve_like_to_any_chat_server(server, cli, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", TOKEN)
    args = ["a red circle", "--template", "demo-caption", "--seed", "4", "--max-new-tokens", "24"]
    remote = cli("rewrite", *args, "--api-url", server.url + "/v1", "--api-model", "demo")
    assert remote.code == 0, remote.stderr
    local = cli("rewrite", *args, "--model", "demo")
    assert local.code == 0, local.stderr
    assert remote.stdout == local.stdout and remote.stdout.strip()


def sse_events(server, body):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    conn.request("POST", "/v1/chat/completions", json.dumps(body), headers)
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    events = []
    for line in resp.read().decode().splitlines():
        if line.startswith("data: "):
            events.append(line[6:])
    conn.close()
    return events


def test_chat_completion_and_its_stream_agree(server):
    body = {
        "model": "demo",
        "messages": [{"role": "system", "content": "Write a caption."}, {"role": "user", "content": "a cat"}],
        "seed": 11,
        "max_tokens": 20,
        "temperature": 0.8,
    }
    status, reply = server.json("POST", "/v1/chat/completions", body)
    assert status == 200, reply
    assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["role"] == "assistant"
    text = reply["choices"][0]["message"]["content"]
    assert text and reply["usage"]["completion_tokens"] <= 20
    events = sse_events(server, {**body, "stream": True, "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert streamed == text  # stripped the same way
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["usage"] == reply["usage"]


@pytest.mark.parametrize(
    "path, body, status, param",
    [
        ("/v1/images/generations", {"prompt": PROMPT, "llmdit": {"steps": 0}}, 400, "llmdit.steps"),
        ("/v1/images/generations", {"prompt": PROMPT, "llmdit": {"stepz": 3}}, 400, "llmdit.stepz"),
        ("/v1/images/generations", {"prompt": PROMPT, "llmdit": {"device": "cuda"}}, 400, "llmdit.device"),
        ("/v1/images/generations", {"prompt": PROMPT, "llmdit": {"dype_method": "magic"}}, 400, "llmdit.dype_method"),
        ("/v1/images/generations", {"prompt": PROMPT, "size": "65x64"}, 400, "size"),
        ("/v1/images/generations", {"prompt": PROMPT, "size": "big"}, 400, "size"),
        ("/v1/images/generations", {"prompt": PROMPT, "size": "4096x4096"}, 400, "size"),
        ("/v1/images/generations", {"prompt": PROMPT, "n": 3}, 400, "n"),
        ("/v1/images/generations", {"prompt": PROMPT, "n": 0}, 400, "n"),
        ("/v1/images/generations", {"prompt": "x" * 501}, 400, "prompt"),
        ("/v1/images/generations", {"prompt": PROMPT, "quality": "hd"}, 400, "quality"),
        ("/v1/images/generations", {"prompt": PROMPT, "response_format": "png"}, 400, "response_format"),
        ("/v1/images/generations", {"prompt": PROMPT, "extra-field": 1}, 400, "extra-field"),
        ("/v1/images/generations", {"prompt": PROMPT, "n": 2, "llmdit": {"seed": 2**63 - 1}}, 400, "llmdit.seed"),
        ("/v1/images/generations", {"prompt": PROMPT, "llmdit": {"seed": 2**63}}, 400, "llmdit.seed"),
        ("/v1/images/generations", {"prompt": PROMPT, "llmdit": {"steps": "8"}}, 400, "llmdit.steps"),
        ("/v1/images/generations", {"prompt": PROMPT, "llmdit": {"enable_thinking": 1}}, 400, "llmdit.enable_thinking"),
        ("/v1/images/generations", {"prompt": PROMPT, "llmdit": {"dype": "yes"}}, 400, "llmdit.dype"),
        ("/v1/images/generations", {"prompt": PROMPT, "llmdit": {"template": "/etc/passwd"}}, 400, "llmdit.template"),
        ("/v1/images/generations", {"prompt": PROMPT, "model": "dall-e-3"}, 404, "model"),
        ("/v1/images/generations", {"prompt": PROMPT, "llmdit": {"seed": -1}}, 400, "llmdit.seed"),
        ("/v1/images/generations", {"prompt": PROMPT, "llmdit": {"lora": ["../x.safetensors"]}}, 400, "llmdit.lora"),
        ("/v1/images/generations", {"llmdit": {}}, 400, "prompt"),
        ("/v1/images/generations", {"prompt": PROMPT, "llmdit": {"steps": True}}, 400, "llmdit.steps"),
        ("/v1/images/generations", {"prompt": PROMPT, "llmdit": {"steps": 101}}, 400, "llmdit.steps"),
        ("/v1/images/generations", {"prompt": PROMPT, "llmdit": {"steps": [3]}}, 400, "llmdit.steps"),
        ("/v1/images/generations", {"prompt": PROMPT, "llmdit": {"lora": ["a\u0000b"]}}, 400, "llmdit.lora"),
        (
            "/v1/images/generations",
            {"prompt": PROMPT, "llmdit": {"lora": ["style.safetensors:1e9"]}},
            400,
            "llmdit.lora",
        ),
        (
            "/v1/images/generations",
            {"prompt": PROMPT, "llmdit": {"negative_prompt": "x" * 501}},
            400,
            "llmdit.negative_prompt",
        ),
        ("/v1/images/generations", {"prompt": PROMPT, "n": True}, 400, "n"),
        ("/v1/images/generations", {"prompt": 7}, 400, "prompt"),
        ("/v1/images/generations", [PROMPT], 400, None),
        ("/v1/llmdit/encode", {"prompts": []}, 400, "prompts"),
        ("/v1/llmdit/encode", {"prompts": [PROMPT], "llmdit": {"steps": 3}}, 400, "llmdit.steps"),
        ("/v1/llmdit/encode", {"prompts": [PROMPT], "llmdit": {"hidden_layer": 99}}, 400, "llmdit.hidden_layer"),
        ("/v1/llmdit/encode", {"prompts": [PROMPT], "llmdit": {"template": "nope"}}, 400, "llmdit.template"),
        ("/v1/chat/completions", {"messages": []}, 400, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}], "max_tokens": 65}, 400, "max_tokens"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "a"}], "temperature": 3},
            400,
            "temperature",
        ),
        ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "a"}]}, 400, "messages.0.role"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]},
            400,
            "messages.0.content.0",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
            400,
            "messages.0.content.0.text",
        ),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}], "stream": "yes"}, 400, "stream"),
        ("/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "a"}]}, 404, "model"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]},
            400,
            "messages.0.content",
        ),
    ],
)
def test_bad_requests_get_json_errors_naming_the_field(server, path, body, status, param):
    got, reply = server.json("POST", path, body)
    assert got == status, reply
    error = reply["error"]
    assert error["param"] == param and error["message"] and "\n" not in error["message"]
    if param:
        assert param.split(".")[-1] in error["message"]


def test_malformed_and_oversized_bodies(server):
    status, data, _ = server.request("POST", "/v1/images/generations", raw=b'{"prompt": ')
    assert status == 400 and "not JSON" in json.loads(data)["error"]["message"]
    big = json.dumps({"prompt": "x" * 70000}).encode()
    status, data, _ = server.request("POST", "/v1/images/generations", raw=big)
    assert status == 413 and "--max-body-bytes" in json.loads(data)["error"]["message"]
    status, data, _ = server.request("GET", "/v1/nothing-here")
    assert status == 404 and "error" in json.loads(data)
    for bad in (b'{"prompt": "x", "n": NaN}', b'{"prompt": "x", "llmdit": {"guidance_scale": 1e999}}', b"[" * 50000):
        status, data, _ = server.request("POST", "/v1/images/generations", raw=bad)
        assert status == 400 and json.loads(data)["error"]["message"], bad[:40]
    plain = {"Content-Type": "text/plain"}  # what a cross-site form may send without asking
    status, data, _ = server.request("POST", "/v1/images/generations", raw=b'{"prompt": "x"}', headers=plain)
    assert status == 415 and "application/json" in json.loads(data)["error"]["message"]
    status, data, _ = server.request("GET", "/docs")
    assert status == 404  # no Swagger page (it would load from a CDN)


def test_token_is_required(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        status, data, h = server.request("GET", "/v1/models", headers=headers, auth=False)
        assert status == 401 and json.loads(data)["error"]["type"] == "authentication_error"
        assert h.get("www-authenticate") == "Bearer"
    status, _, _ = server.request("POST", "/v1/images/generations", {"prompt": PROMPT}, auth=False)
    assert status == 401


def slow_body(seed: int) -> dict:
    """A few seconds of work on a busy 2-core machine."""
    return {"prompt": PROMPT, "size": "128x128", "llmdit": {"seed": seed, "steps": 30}}


def test_full_queue_answers_503_and_recovers(server):
    results = []

    def call(seed):
        results.append(server.request("POST", "/v1/images/generations", slow_body(seed))[:2])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
        time.sleep(0.3)
    for t in threads:
        t.join(300)
    codes = sorted(code for code, _ in results)
    assert codes.count(503) >= 1 and codes.count(200) >= 2, codes
    busy = next(json.loads(d) for c, d in results if c == 503)
    assert "--max-queue" in busy["error"]["message"]
    status, _ = server.json("POST", "/v1/images/generations", {"prompt": PROMPT, "size": "32x32"})
    assert status == 200


def send(server, body) -> http.client.HTTPConnection:
    """A request whose reply is never read (the client may go away)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    conn.request("POST", "/v1/images/generations", json.dumps(body), headers)
    return conn


def hang_up(conn) -> None:
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()


def wait_status(server, ok) -> dict:
    for _ in range(150):  # bounded
        status = server.json("GET", "/v1/llmdit/status")[1]
        if ok(status):
            return status
        time.sleep(0.1)
    raise AssertionError(f"status never reached: {status}")


def test_a_client_that_goes_away_does_not_wedge_the_queue(server):
    long = send(server, {"prompt": PROMPT, "size": "256x256", "llmdit": {"steps": 100}})
    running = wait_status(server, lambda s: s["running"] and s["running"].get("total"))["running"]
    assert running["total"] == 100
    waiting = send(server, {"prompt": PROMPT, "size": "32x32"})
    wait_status(server, lambda s: s["waiting"] == 1)
    hang_up(waiting)  # a waiting client goes away: its place in the queue (of 1) is free again
    wait_status(server, lambda s: s["waiting"] == 0)
    hang_up(long)  # the running one too: it stops at its next step
    start = time.monotonic()
    status, reply = server.json("POST", "/v1/images/generations", {"prompt": PROMPT, "size": "32x32"}, timeout=60)
    assert status == 200, reply
    assert time.monotonic() - start < 30  # the 100-step job was stopped, not run to its end
    log = server.output()
    assert "cancelled before it started" in log and "generate 1 image(s): cancelled" in log


def test_web_page_asks_for_the_token_and_shows_server_errors(server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium()
    try:
        driver.get(server.url + "/")
        error = WebDriverWait(driver, 30).until(ec.visibility_of_element_located((By.ID, "error")))
        assert "token" in error.text  # the server wants one: the page asks for it
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "prompt").click()  # leaving the box saves the token and retries
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "model").text == "demo")
        assert not driver.find_element(By.ID, "error").is_displayed()
        assert driver.execute_script("return localStorage.getItem('llmdit-token')") == TOKEN
        WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.CSS_SELECTOR, "body[data-ready]")))
        seed = driver.find_element(By.CSS_SELECTOR, '[data-setting="seed"]')
        options = [
            o.get_attribute("value")
            for o in driver.find_elements(By.CSS_SELECTOR, '[data-setting="encoder.template"] option')
        ]
        assert "low-poly-faceted" in options and "demo-caption" not in options  # style templates only
        driver.find_element(By.ID, "prompt").send_keys(PROMPT)
        driver.execute_script("arguments[0].closest('details').open = true", seed)
        seed.send_keys("99999999999999999999999")  # past what the server takes (the browser lets it through)
        driver.find_element(By.CSS_SELECTOR, '[data-action="generate"]').click()
        error = WebDriverWait(driver, 30).until(ec.visibility_of_element_located((By.ID, "error")))
        assert "llmdit.seed" in error.text
        assert not driver.find_element(By.CSS_SELECTOR, '[data-role="progress"]').is_displayed()
    finally:
        driver.quit()


def test_a_dit_server_encodes_on_the_encoder_server(server, cli):
    dit = Server(
        "--model", "demo", "--components", "dit", "--encoder-url", server.url + "/v1",
        "--encoder-key-env", "LLMDIT_TEST_TOKEN", token=TOKEN,
    )  # fmt: skip
    try:
        body = {"prompt": PROMPT, "size": "64x64", "llmdit": {"seed": 2, "steps": 3}}
        status, reply = dit.json("POST", "/v1/images/generations", body)
        assert status == 200, reply
        Path("dit.png").write_bytes(png_of(reply["data"][0]))
        status, forwarded, _ = dit.request("POST", "/v1/llmdit/encode", {"prompts": [PROMPT]})
        direct = server.request("POST", "/v1/llmdit/encode", {"prompts": [PROMPT]})[1]
        assert status == 200 and forwarded == direct  # answered by its encoder server
        chat = {"messages": [{"role": "user", "content": "a cat"}]}
        assert dit.json("POST", "/v1/chat/completions", chat)[0] == 404  # no text encoder loaded here
        health = dit.json("GET", "/health")[1]
        assert health["components"] == "dit"
    finally:
        dit.stop()
    local = cli(
        "generate", PROMPT, "--model", "demo", "-W", "64", "-H", "64", "--seed", "2", "--steps", "3", "-o", "l.png"
    )
    assert local.code == 0, local.stderr
    assert (pixels("dit.png") == pixels("l.png")).all()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--components", "dit"], "--encoder-url"),
        (["--components", "gpu"], "--components gpu"),
        (["--token-env", "LLMDIT_NOT_SET_ANYWHERE"], "--token-env LLMDIT_NOT_SET_ANYWHERE"),
        (["--port", "70000"], "--port 70000"),
        (["--lora-dir", "no/such/folder"], "--lora-dir"),
        (["--encoder-url", "ftp://x/v1", "--components", "dit"], "--encoder-url ftp://x/v1"),
    ],
)
def test_bad_serve_flags_are_one_line(cli, args, needle):
    r = cli("serve", "--model", "demo", *args)
    assert_one_line_error(r, needle)


def test_remote_errors_are_one_line(cli):
    port = free_port()  # nothing listens there
    r = cli("encode", PROMPT, "--api-url", f"http://127.0.0.1:{port}/v1", "-o", "x.embeds.safetensors")
    assert_one_line_error(r, "--api-url", "cannot connect")
    assert not list(Path(".").glob("*x.embeds*"))
    r = cli("generate", PROMPT, "--model", "demo", "--encoder-url", f"http://127.0.0.1:{port}/v1", "-o", "x.png")
    assert_one_line_error(r, "--encoder-url", "cannot connect")
    r = cli("encode", PROMPT, "--api-url", "127.0.0.1/v1")
    assert_one_line_error(r, "--api-url", "http://")


def test_a_template_the_server_has_otherwise_is_refused(server, cli, monkeypatch, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    builtin = next(Path(__file__).resolve().parents[1].glob("llmdit_cli/templates/*/low-poly-faceted.md"))
    (mine / "low-poly-faceted.md").write_text(builtin.read_text() + "\nAlso: warm colours only.\n")
    monkeypatch.setenv("LLMDIT_API_KEY", TOKEN)
    r = cli(
        "encode", PROMPT, "--template", "low-poly-faceted", "--templates-dir", mine, "--api-url", server.url + "/v1",
        "-o", "x.embeds.safetensors",
    )  # fmt: skip
    assert_one_line_error(r, "--api-url", "template 'low-poly-faceted'")
    assert not Path("x.embeds.safetensors").exists()


def test_encoder_server_failures_are_502():
    from llmdit_cli.remote import RemoteError
    from llmdit_cli.serve.app import describe, status_for
    from llmdit_cli.serve.settings import ServerSettings

    message, kind, _ = describe(RemoteError("--encoder-url http://x/v1: cannot connect"), ServerSettings({}))
    assert status_for(kind) == 502 and "encoder server" in message


def test_wrong_token_from_the_client_is_one_line(server, cli):
    r = cli("encode", PROMPT, "--api-url", server.url + "/v1", "-o", "x.embeds.safetensors")
    assert_one_line_error(r, "--api-url", "401", "API token")


def test_a_client_record_names_loras_without_server_paths(tmp_path):
    from llmdit_cli.serve.settings import ServerSettings

    folder = tmp_path / "loras"
    cfg = ServerSettings(flags={}, lora_dir=folder)
    record = {"seed": 1, "loras": [f"{folder}/styles/ink.safetensors:0.7", f"{tmp_path}/own.safetensors:1.0"]}
    assert cfg.client_record(record)["loras"] == ["styles/ink.safetensors:0.7", "own.safetensors:1"]
    assert str(tmp_path) not in json.dumps(ServerSettings(flags={}).client_record(record))


def test_openapi_describes_the_routes_and_their_request_bodies(server):
    """The schema clients (and schemathesis) read: every route, each body's fields by name."""
    status, schema = server.json("GET", "/openapi.json", auth=False)
    assert status == 200
    paths = schema["paths"]
    for path in ("/v1/chat/completions", "/v1/llmdit/encode", "/v1/images/generations"):
        body = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        name = body.rsplit("/", 1)[1]
        assert schema["components"]["schemas"][name]["properties"], name
    assert {"/health", "/v1/models", "/v1/llmdit/status", "/v1/llmdit/templates"} <= set(paths)
    chat = schema["components"]["schemas"]["ChatBody"]
    assert "messages" in chat["required"] and "Message" in schema["components"]["schemas"]
    assert set(schema["components"]["schemas"]["ImagesBody"]["properties"]) >= {"prompt", "n", "size", "llmdit"}


def test_settings_are_resolved_once_at_start(tmp_path):
    """Editing the config file while serving changes nothing (it would load a second model copy)."""
    config = tmp_path / "config.toml"
    config.write_text("[default.generation]\nsteps = 3\n")
    s = Server("--model", "demo", "--config", str(config))
    try:
        config.write_text("[default.generation]\nsteps = 5\n")
        body = {"prompt": PROMPT, "llmdit": {"seed": 1}}
        status, data = s.json("POST", "/v1/images/generations", body)
        assert status == 200, data
        assert data["data"][0]["llmdit"]["settings"]["steps"] == 3
        config.write_text("[default.generation]\nsteps = nonsense\n")
        assert s.json("POST", "/v1/images/generations", body)[0] == 200
    finally:
        s.stop()
