"""What `llmdit serve` does with requests a client author gets wrong, or an attacker sends: a
loopback server without a token (Host and Origin checks), multipart mistakes, uploads too small
or too large in pixels, the body allowance for data-URL images, OpenAI's `response_format` url,
errors that must not name the server's paths, and the schema of the errors."""

import base64
import io
import json
import time

import numpy as np
import pytest
from helpers import Server
from PIL import Image

PROMPT = "a red circle on a blue background"
FAST = {"steps": 1, "seed": 3}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """No token, on 127.0.0.1 (so Host is checked), 64 KiB bodies, a LoRA folder with a bad file."""
    loras = tmp_path_factory.mktemp("loras")
    (loras / "bad.safetensors").write_bytes(b"not a safetensors file")
    s = Server(
        "--model", "demo", "--data-dir", str(tmp_path_factory.mktemp("data")), "--max-body-bytes", "65536",
        "--lora-dir", str(loras),
    )  # fmt: skip
    s.loras = loras
    yield s
    s.stop()


def png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def multipart(fields: dict, files: dict) -> tuple[bytes, dict]:
    boundary = "llmdit-test-boundary"
    out = b""
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    for name, data in files.items():
        out += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
                "Content-Type: image/png\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    return out + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def post_form(server, path, fields, files, **headers):
    raw, h = multipart(fields, files)
    status, data, _ = server.request("POST", path, raw=raw, headers={**h, **headers})
    return status, json.loads(data)


def error_of(reply) -> tuple[str, str]:
    return reply["error"]["message"], reply["error"]["param"]


def test_another_host_name_gets_the_json_error(server):
    status, data, _ = server.request("GET", "/v1/models", headers={"Host": "evil.example:8000"})
    reply = json.loads(data)
    assert status == 400 and reply["error"]["param"] == "Host" and "evil.example" in reply["error"]["message"]
    assert server.request("GET", "/v1/models", headers={"Host": f"localhost:{server.port}"})[0] == 200


def test_a_form_from_another_site_is_refused_and_the_studios_own_is_taken(server):
    image = png(Image.new("RGB", (32, 32), (200, 30, 30)))
    fields = {"prompt": "origin test", "llmdit": json.dumps(FAST)}
    status, reply = post_form(server, "/v1/images/edits", fields, {"image": image}, Origin="http://evil.example")
    assert status == 403 and "evil.example" in reply["error"]["message"], reply
    for origin in ("null", f"http://evil.example:{server.port}"):
        assert post_form(server, "/v1/images/edits", fields, {"image": image}, Origin=origin)[0] == 403
    proxied = {"Origin": "https://studio.example", "X-Forwarded-Host": "studio.example"}
    for headers in ({"Origin": server.url}, {}, proxied):
        status, reply = post_form(server, "/v1/images/edits", fields, {"image": image}, **headers)
        assert status == 200, reply
    history = server.json("GET", "/v1/llmdit/history?limit=50&q=origin%20test")[1]["data"]
    assert len(history) == 3  # the refused forms made nothing


def test_decompose_without_a_layered_model_is_404_at_once(server):
    image = png(Image.new("RGB", (32, 32)))
    started = time.monotonic()
    status, reply = post_form(server, "/v1/llmdit/decompose", {}, {"image": image})
    assert status == 404 and "--layered-model" in reply["error"]["message"], reply
    assert time.monotonic() - started < 10
    status, reply = server.json("POST", "/v1/llmdit/stacks/0123456789abcdef0123/edit", {"layer": 0, "instruction": "x"})
    assert status == 404 and "--edit-model" in reply["error"]["message"], reply


@pytest.mark.parametrize(
    ("fields", "files", "param", "needle"),
    [
        ({"prompt": PROMPT, "llmdit[steps]": "2"}, "image", "llmdit[steps]", "as one field holding a JSON object"),
        ({"prompt": PROMPT, "image": "notafile"}, None, "image", "file upload"),
        ({"prompt": PROMPT}, "tiny", "image", "8x8 pixels"),
        ({"prompt": PROMPT}, "huge", "image", "9000x9000 pixels"),
        ({"prompt": PROMPT}, "bomb", "image", "pixels an upload may have"),  # past PIL's own guard
    ],
)
def test_multipart_mistakes_name_the_field(server, fields, files, param, needle):
    images = {
        "image": png(Image.new("RGB", (32, 32))),
        "tiny": png(Image.new("RGB", (8, 8))),
        "huge": png(Image.new("1", (9000, 9000))),  # a few KiB of PNG, 81 megapixels decoded
        "bomb": png(Image.new("1", (14000, 14000))) if files == "bomb" else b"",
    }
    status, reply = post_form(server, "/v1/images/edits", fields, {"image": images[files]} if files else {})
    message, got = error_of(reply)
    assert status in (400, 413) and got == param and needle in message, reply


def test_a_data_url_image_may_take_more_than_the_body_limit(server):
    """--max-body-bytes (64 KiB here) bounds the JSON around the images; each image has its own
    bound (--max-image-bytes), as in a multipart upload."""
    noise = np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    data = png(Image.fromarray(noise))
    assert len(data) > 70_000
    body = {"prompt": PROMPT, "size": "32x32", "image": "data:image/png;base64," + base64.b64encode(data).decode()}
    status, reply = server.json("POST", "/v1/llmdit/generate", {**body, "llmdit": FAST})
    assert status == 202, reply
    for _ in range(600):  # bounded: the demo's one step takes well under a second
        job = server.json("GET", f"/v1/llmdit/jobs/{reply['job']}")[1]
        if job["state"] not in ("queued", "running"):
            break
        time.sleep(0.1)
    assert job["state"] == "done", job
    status, reply = server.json("POST", "/v1/llmdit/generate", {**body, "prompt": "x" * 70_000})
    assert status == 413 and "--max-body-bytes" in reply["error"]["message"], reply


def test_response_format_url_gives_the_images_address(server):
    body = {"prompt": PROMPT, "size": "32x32", "llmdit": FAST}
    status, as_b64 = server.json("POST", "/v1/images/generations", body)
    assert status == 200, as_b64
    status, as_url = server.json("POST", "/v1/images/generations", {**body, "response_format": "url"})
    assert status == 200 and "b64_json" not in as_url["data"][0] or as_url["data"][0]["b64_json"] is None
    url = as_url["data"][0]["url"]
    assert url.startswith(server.url + "/v1/llmdit/files/"), url
    status, data, headers = server.request("GET", url.removeprefix(server.url))
    assert status == 200 and headers["content-type"] == "image/png"
    first = Image.open(io.BytesIO(base64.b64decode(as_b64["data"][0]["b64_json"])))
    assert np.array_equal(np.asarray(first), np.asarray(Image.open(io.BytesIO(data))))
    assert server.json("POST", "/v1/images/generations", {**body, "size": "auto", "output_format": "png"})[0] == 200


def test_a_lora_that_fails_to_load_is_named_as_the_request_named_it(server):
    status, reply = server.json(
        "POST", "/v1/images/generations", {"prompt": PROMPT, "llmdit": {"lora": "bad.safetensors"}}
    )
    message, param = error_of(reply)
    assert status == 400 and param == "llmdit.lora" and "bad.safetensors" in message, reply
    assert str(server.loras) not in message and str(server.loras.resolve()) not in message


def test_odd_requests_get_the_json_error(server):
    status, data, headers = server.request("GET", "/v1/images/generations")
    assert status == 405 and "POST" in headers.get("allow", "") and json.loads(data)["error"]["message"]
    raw = b'{"prompt": "x", "n": ' + b"9" * 5000 + b"}"
    status, data, _ = server.request("POST", "/v1/images/generations", raw=raw)
    message = json.loads(data)["error"]["message"]
    assert status == 400 and "digits" in message and "sys." not in message


def test_the_schema_gives_the_errors_the_server_sends(server):
    status, schema = server.json("GET", "/openapi.json")
    assert status == 200
    error = {"$ref": "#/components/schemas/ErrorReply"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            answers = operation["responses"]
            assert "422" not in answers, (path, method)
            assert answers["4XX"]["content"]["application/json"]["schema"] == error, (path, method)
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert set(schema["components"]["schemas"]["ErrorReply"]["properties"]) == {"error"}
    form = schema["paths"]["/v1/images/edits"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["llmdit"]["type"] == "string"
    items = schema["components"]["schemas"]["ImagesBody"]["properties"]["response_format"]
    assert set(items["enum"]) == {"b64_json", "url"}


def test_the_origin_check_is_for_tokenless_servers_and_knows_proxies():
    """Unit: with a token a form cannot authenticate, so any Origin passes; without one, the
    scheme's default port and a proxy's first X-Forwarded-Host are this server."""
    from starlette.requests import Request

    from llmdit_cli.serve.deps import refuse_other_sites
    from llmdit_cli.serve.settings import ApiError

    def state(token):
        return type("State", (), {"cfg": type("Cfg", (), {"token": token})()})()

    def refused(token, **headers) -> bool:
        scope = {"type": "http", "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]}
        try:
            refuse_other_sites(Request(scope), state(token))
        except ApiError as exc:
            return exc.status == 403
        return False

    assert not refused("t", origin="http://evil.example", host="127.0.0.1:8000")
    assert refused(None, origin="http://evil.example", host="127.0.0.1:8000")
    assert refused(None, origin="http://127.0.0.1:9999", host="127.0.0.1:8000")
    assert not refused(None, origin="http://example.com", host="example.com:80")
    proxied = {"origin": "https://studio.example", "host": "127.0.0.1:8000"}
    assert not refused(None, **proxied, x_forwarded_host="studio.example:443")
    assert not refused(None, **proxied, x_forwarded_host="studio.example, inner")
    assert refused(None, **proxied)


def test_a_failed_write_on_the_server_is_its_own_500_without_the_path():
    from llmdit_cli.errors import WriteError
    from llmdit_cli.serve.errors import describe, status_for
    from llmdit_cli.serve.settings import ServerSettings

    message, kind, param = describe(
        WriteError("/srv/data/stacks/x/layer_00.png: cannot write (disk full)"), ServerSettings({})
    )
    assert status_for(kind) == 500 and "/srv" not in message and param is None
