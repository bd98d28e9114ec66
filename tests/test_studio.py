"""The studio's API on a real server (the demo model): the settings list, img2img over OpenAI's
edits endpoint and as a job, vision images as data URLs, rewriting, jobs with progress and
cancelling, the history in SQLite (pagination, delete, reuse, SIGKILL), and `llmdit history`."""

import base64
import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from helpers import Server, assert_one_line_error, pixels

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "recipes" / "images" / "vl-reference.png"
TOKEN = "studio-token"
PROMPT = "a red circle on a blue background"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def server(data_dir):
    s = Server("--model", "demo", "--data-dir", str(data_dir), "--max-image-bytes", "200000", token=TOKEN)
    yield s
    s.stop()


def data_url(path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def wait_job(server, job_id, timeout=120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # bounded: a job of the demo takes seconds
        status, job = server.json("GET", f"/v1/llmdit/jobs/{job_id}")
        assert status == 200, job
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def fetch(server, url, path):
    status, data, headers = server.request("GET", url)
    assert status == 200, data
    Path(path).write_bytes(data)
    return headers


def test_settings_lists_every_request_time_setting(server):
    from llmdit_cli.config import KEY_FLAG, SECTIONS

    status, reply = server.json("GET", "/v1/llmdit/settings")
    assert status == 200, reply
    by_key = {s["key"]: s for s in reply["data"]}
    wanted = {
        f"{section}.{name}"
        for section in ("encoder", "generation", "control", "scheduler", "slg", "dype", "lora", "vl", "layered")
        for name in SECTIONS[section].model_fields
    } - {"vl.model", "vl.device", "layered.model", "layered.edit_model", "control.model", "generation.batch_size"}
    step_cache = {"optimization.step_cache", "optimization.step_cache_threshold"}  # it changes the pixels
    assert set(by_key) == wanted | step_cache | {"seed"}
    for key, s in by_key.items():
        assert s["help"], key
        if key != "seed":
            assert s["name"] == {"loras": "lora"}.get(KEY_FLAG[key], KEY_FLAG[key])
    assert by_key["generation.steps"]["model_default"] == 2  # the demo family's, not the built-in None
    assert by_key["generation.steps"]["default"] is None
    assert by_key["encoder.long_prompt_mode"]["choices"][:2] == ["error", "truncate"]
    assert by_key["vl.alpha"]["min"] == 0 and by_key["vl.alpha"]["max"] == 1
    assert by_key["slg.layers"]["type"] == "list[integer]"
    panels = [s["panel"] for s in reply["data"]]
    assert (
        panels.index("Generation")
        < panels.index("Skip-layer guidance")
        < panels.index("DyPE (sizes beyond the training resolution)")
    )  # the CLI's help-panel order


def test_openai_edits_equal_img2img(server, cli, tmp_path):
    from openai import OpenAI

    assert cli("generate", PROMPT, "--model", "demo", "--seed", "1", "-o", "input.png").code == 0
    client = OpenAI(base_url=server.url + "/v1", api_key=TOKEN, max_retries=0, timeout=120)
    settings = {"seed": 4, "steps": 4, "strength": 0.5, "guidance_scale": 1.5}
    with open("input.png", "rb") as fh:
        reply = client.images.edit(
            image=fh,
            prompt="a green square",
            n=1,
            response_format="b64_json",
            extra_body={"llmdit": json.dumps(settings)},
        )
    Path("api.png").write_bytes(base64.b64decode(reply.data[0].b64_json))
    r = cli(
        "img2img", "a green square", "--image", "input.png", "--model", "demo", "--seed", "4", "--steps", "4",
        "--strength", "0.5", "--guidance-scale", "1.5", "-o", "local.png",
    )  # fmt: skip
    assert r.code == 0, r.stderr
    assert (pixels("api.png") == pixels("local.png")).all()


def test_a_job_has_progress_and_its_history_entry_remakes_the_image(server, cli):
    body = {"prompt": PROMPT, "size": "64x32", "llmdit": {"seed": 11, "steps": 6, "shift": 2.0, "slg_scale": 1.5}}
    status, started = server.json("POST", "/v1/llmdit/generate", body)
    assert status == 202, started
    seen = set()
    for _ in range(600):  # bounded
        job = server.json("GET", f"/v1/llmdit/jobs/{started['job']}")[1]
        if job["step"] is not None:
            seen.add(job["step"])
        if job["state"] == "done":
            break
        time.sleep(0.05)
    assert job["state"] == "done" and job["steps"] == 6 and job["error"] is None
    assert seen and max(seen) == 6  # progress was visible
    image = job["result"]["images"][0]
    headers = fetch(server, image["url"], "job.png")
    assert "immutable" in headers.get("cache-control", "")
    r = cli(
        "generate", PROMPT, "--model", "demo", "-W", "64", "-H", "32", "--seed", "11", "--steps", "6",
        "--shift", "2.0", "--slg-scale", "1.5", "-o", "cli.png",
    )  # fmt: skip
    assert r.code == 0, r.stderr
    assert (pixels("job.png") == pixels("cli.png")).all()
    status, entry = server.json("GET", f"/v1/llmdit/history/{image['history']}")
    assert status == 200 and entry["task"] == "generate" and entry["seed"] == 11 and entry["family"] == "z-image"
    # what "reuse" sends: the entry's request, as the settings list names the fields
    again = dict(entry["request"])
    status, started = server.json("POST", "/v1/llmdit/generate", {"prompt": entry["prompt"], "llmdit": again})
    assert status == 202, started
    fetch(server, wait_job(server, started["job"])["result"]["images"][0]["url"], "again.png")
    assert (pixels("again.png") == pixels("cli.png")).all()


def test_img2img_from_a_history_entry_records_its_parent(server):
    body = {"prompt": PROMPT, "llmdit": {"seed": 2}}
    first = wait_job(server, server.json("POST", "/v1/llmdit/generate", body)[1]["job"])["result"]["images"][0]
    body = {"prompt": "a green square", "parent": first["history"], "llmdit": {"seed": 3, "strength": 0.4}}
    status, started = server.json("POST", "/v1/llmdit/generate", body)
    assert status == 202, started
    child = wait_job(server, started["job"])["result"]["images"][0]
    entry = server.json("GET", f"/v1/llmdit/history/{child['history']}")[1]
    assert entry["task"] == "img2img" and entry["parent"] == first["history"]
    assert entry["settings"]["strength"] == 0.4 and entry["request"]["strength"] == 0.4


def test_a_vision_image_as_a_data_url_equals_vl_image(server, cli):
    body = {
        "prompt": PROMPT,
        "llmdit": {"seed": 5, "vl_image": data_url(REFERENCE), "vl_alpha": 0.7, "vl_blend_mode": "adain"},
    }
    status, reply = server.json("POST", "/v1/images/generations", body)
    assert status == 200, reply
    Path("api.png").write_bytes(base64.b64decode(reply["data"][0]["b64_json"]))
    args = ["--vl-image", REFERENCE, "--vl-alpha", "0.7", "--vl-blend-mode", "adain", "--seed", "5"]
    r = cli("generate", PROMPT, "--model", "demo", *args, "-o", "local.png")
    assert r.code == 0, r.stderr
    assert (pixels("api.png") == pixels("local.png")).all()
    vl = reply["data"][0]["llmdit"]["settings"]["vl"]
    assert vl["image"].startswith("upload:") and str(server.proc.args[-1]) not in json.dumps(vl)
    # the record names the upload, so the same settings work again without sending the image
    again = {
        "prompt": PROMPT,
        "llmdit": {"seed": 5, "vl_image": vl["image"], "vl_alpha": 0.7, "vl_blend_mode": "adain"},
    }
    status, reply = server.json("POST", "/v1/images/generations", again)
    assert status == 200, reply
    Path("again.png").write_bytes(base64.b64decode(reply["data"][0]["b64_json"]))
    assert (pixels("again.png") == pixels("local.png")).all()


def test_rewrite_equals_the_cli(server, cli):
    """Without a template both take the model family's, and the history names it."""
    body = {"prompts": ["red circle", "blue square"], "llmdit": {"seed": 9}}
    status, reply = server.json("POST", "/v1/llmdit/rewrite", body)
    assert status == 200, reply
    r = cli("rewrite", "red circle", "blue square", "--seed", "9", "--model", "demo")
    assert r.code == 0, r.stderr
    assert [d["text"] for d in reply["data"]] == r.stdout.splitlines()
    entry = server.json("GET", f"/v1/llmdit/history/{reply['data'][0]['history']}")[1]
    assert (
        entry["task"] == "rewrite" and entry["prompt"] == "red circle" and entry["result"] == reply["data"][0]["text"]
    )
    assert entry["settings"]["template"] == "demo-caption"


def test_history_pages_filters_and_deletes(server, data_dir):
    made = []
    for seed in range(3):
        reply = server.json("POST", "/v1/images/generations", {"prompt": f"page test {seed}", "llmdit": {"seed": seed}})
        made.append(reply[1]["data"][0]["llmdit"]["history"])
    status, page = server.json("GET", "/v1/llmdit/history?limit=2&q=page%20test")
    assert status == 200 and [e["id"] for e in page["data"]] == made[::-1][:2]
    status, rest = server.json("GET", f"/v1/llmdit/history?limit=2&q=page%20test&before={page['next']}")
    assert [e["id"] for e in rest["data"]] == made[:1] and rest["next"] is None
    assert page["next"] == made[1] and server.json("DELETE", f"/v1/llmdit/history/{made[1]}")[0] == 200
    status, rest = server.json("GET", f"/v1/llmdit/history?limit=2&q=page%20test&before={page['next']}")
    assert [e["id"] for e in rest["data"]] == made[:1]  # a cursor whose entry is gone still pages on
    tasks = {e["task"] for e in server.json("GET", "/v1/llmdit/history?task=rewrite&limit=200")[1]["data"]}
    assert tasks <= {"rewrite"}
    files = server.json("GET", f"/v1/llmdit/history/{made[0]}")[1]["files"]
    assert all((data_dir / "files" / f).is_file() for f in files)
    assert server.json("DELETE", f"/v1/llmdit/history/{made[0]}")[0] == 200
    assert not any((data_dir / "files" / f).exists() for f in files)
    assert server.json("GET", f"/v1/llmdit/history/{made[0]}")[0] == 404
    assert server.json("DELETE", f"/v1/llmdit/history/{made[0]}")[0] == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "needle"),
    [
        ("GET", "/v1/llmdit/history/0123456789abcdef0123", None, 404, "no history entry"),
        ("GET", "/v1/llmdit/jobs/nosuchjob", None, 404, "no job"),
        ("DELETE", "/v1/llmdit/jobs/nosuchjob", None, 404, "no job"),
        ("GET", "/v1/llmdit/files/../history.sqlite3", None, 404, "Not Found"),
        ("GET", "/v1/llmdit/history?limit=0", None, 400, "limit"),
        ("GET", "/v1/llmdit/history?task=paint", None, 400, "task"),
        ("POST", "/v1/llmdit/generate", {"prompt": "x", "image": "data:image/png;base64,aGVsbG8="}, 400, "image"),
        ("POST", "/v1/llmdit/generate", {"prompt": "x", "image": "/etc/passwd"}, 400, "image"),
        ("POST", "/v1/llmdit/generate", {"prompt": "x", "parent": "0123456789abcdef0123"}, 404, "parent"),
        ("POST", "/v1/llmdit/generate", {"prompt": "x", "llmdit": {"vl_image": "/etc/hosts"}}, 400, "llmdit.vl_image"),
        ("POST", "/v1/llmdit/generate", {"prompt": "x", "llmdit": {"vl_model": "demo"}}, 400, "llmdit.vl_model"),
        ("POST", "/v1/llmdit/rewrite", {"prompts": ["x"], "template": "no-such"}, 400, "template"),
        ("POST", "/v1/llmdit/rewrite", {"prompts": ["x"], "image": "data:image/png;base64,AAAA"}, 400, "image"),
    ],
)
def test_bad_requests_are_4xx_naming_the_field(server, method, path, body, status, needle):
    got, reply = server.json(method, path, body)
    assert got == status, reply
    assert needle in reply["error"]["message"] or needle == reply["error"]["param"], reply


def test_oversized_and_non_image_uploads(server):
    big = "data:image/png;base64," + base64.b64encode(os.urandom(300_000)).decode()
    status, reply = server.json("POST", "/v1/llmdit/generate", {"prompt": "x", "image": big})
    assert status == 413 and reply["error"]["param"] == "image", reply
    boundary = "llmditboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na cat\r\n',
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
        "Content-Type: image/png\r\n\r\nnot an image\r\n",
        f"--{boundary}--\r\n",
    ]
    raw = "".join(parts).encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    status, data, _ = server.request("POST", "/v1/images/edits", raw=raw, headers=headers)
    reply = json.loads(data)
    assert status == 400 and reply["error"]["param"] == "image" and "not an image" in reply["error"]["message"]
    raw = raw.replace(b"not an image", os.urandom(300_000))  # over --max-image-bytes 200000
    status, data, _ = server.request("POST", "/v1/images/edits", raw=raw, headers=headers)
    reply = json.loads(data)
    assert status == 413 and reply["error"]["param"] == "image", reply
    raw = b"x" * (1 << 21)  # over --max-body-bytes plus two images
    status, data, _ = server.request("POST", "/v1/images/edits", raw=raw, headers=headers)
    assert status == 413, data


def test_a_cancelled_job_is_cancelled_and_leaves_no_entry(server):
    before = server.json("GET", "/v1/llmdit/history?limit=200")[1]["data"]
    body = {"prompt": "cancel me", "size": "256x256", "llmdit": {"steps": 100, "seed": 1}}
    status, started = server.json("POST", "/v1/llmdit/generate", body)
    assert status == 202
    for _ in range(600):  # bounded: until it runs
        if server.json("GET", f"/v1/llmdit/jobs/{started['job']}")[1]["state"] == "running":
            break
        time.sleep(0.05)
    status, job = server.json("DELETE", f"/v1/llmdit/jobs/{started['job']}")
    assert status == 200 and job["state"] == "cancelled"
    job = wait_job(server, started["job"])
    assert job["state"] == "cancelled" and job["result"] is None
    after = server.json("GET", "/v1/llmdit/history?limit=200")[1]["data"]
    assert [e["id"] for e in after] == [e["id"] for e in before]


def test_history_survives_sigkill_with_two_servers_on_one_data_dir(tmp_path):
    data = tmp_path / "data"
    servers = [Server("--model", "demo", "--data-dir", str(data)) for _ in range(2)]
    answered: list[str] = []
    lock = threading.Lock()

    def client(s, n):
        for i in range(n):  # bounded
            try:
                status, reply = s.json("POST", "/v1/images/generations", {"prompt": f"kill {i}"}, timeout=60)
            except OSError:
                return  # the server died under us
            if status == 200:
                with lock:
                    answered.append(reply["data"][0]["llmdit"]["history"])

    try:
        threads = [threading.Thread(target=client, args=(s, 40)) for s in servers for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(answered) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(servers[0].proc.pid, signal.SIGKILL)  # mid-write, somewhere
        time.sleep(0.3)
        servers[1].proc.send_signal(signal.SIGKILL)
        for t in threads:
            t.join(90)
        assert len(answered) >= 6
    finally:
        for s in servers:
            s.stop()
    again = Server("--model", "demo", "--data-dir", str(data))  # opening recovers
    try:
        listed = again.json("GET", "/v1/llmdit/history?limit=200")[1]["data"]
    finally:
        again.stop()
    db = sqlite3.connect(data / "history.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert set(answered) <= {e["id"] for e in listed}
    assert db.execute("SELECT count(*) FROM entries WHERE state != 'done'").fetchone()[0] == 0
    named = {row[0] for row in db.execute("SELECT name FROM files")}
    on_disk = {p.name for p in (data / "files").iterdir()}
    assert named == on_disk  # no orphan rows, no orphan files


def test_history_commands_read_the_servers_database(server, data_dir, cli, tmp_path):
    status, reply = server.json("POST", "/v1/images/generations", {"prompt": "for the cli", "llmdit": {"seed": 21}})
    entry_id = reply["data"][0]["llmdit"]["history"]
    r = cli("history", "list", "--data-dir", data_dir, "--json", "-q", "for the cli")
    assert r.code == 0, r.stderr
    assert [json.loads(line)["id"] for line in r.stdout.splitlines()] == [entry_id]
    r = cli("history", "show", entry_id, "--data-dir", data_dir)
    assert r.code == 0 and "seed: 21" in r.stdout
    r = cli("history", "export", entry_id, "--data-dir", data_dir, "-o", tmp_path / "out")
    assert r.code == 0, r.stderr
    exported = Path(r.stdout.strip())
    from llmdit_cli.pngmeta import settings_of

    assert settings_of(exported.read_bytes(), exported.name)["seed"] == 21
    assert_one_line_error(cli("history", "show", "nope", "--data-dir", data_dir), "nope: no such history entry")
    assert_one_line_error(cli("history", "list", "--data-dir", tmp_path / "none"), "no history here")


def dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_opening_the_history_removes_what_a_killed_writer_left(tmp_path):
    from llmdit_cli.history import History

    h = History(tmp_path)
    kept = h.add("generate", "demo", "z-image", {"seed": 1}, [b"png one"], prompt="kept", seed=1)
    with sqlite3.connect(h.path) as db:  # a writer killed between its two commits
        db.execute(
            "INSERT INTO entries VALUES ('0000000000000000dead', 1.0, 'generate', 'demo', 'z-image', 'lost', 2,"
            " '{}', NULL, NULL, 'writing', ?)",
            (dead_pid(),),
        )
        db.execute("INSERT INTO files (entry, name) VALUES ('0000000000000000dead', '0000000000000000dead-0.png')")
        db.execute(
            "INSERT INTO entries VALUES ('0000000000000000a11e', 1.0, 'generate', 'demo', 'z-image', 'busy', 3,"
            " '{}', NULL, NULL, 'writing', ?)",
            (os.getpid(),),  # a live writer: left alone
        )
    (h.files / "0000000000000000dead-0.png").write_bytes(b"half")
    (h.stack_dir("0000000000000000dead") / "layer_00.png").parent.mkdir()  # its half-made layer folder
    (h.stacks / ".0000000000000000dead.x1y2.tmp").mkdir()  # and a temporary one
    (h.stacks / "0000000000000000gone").mkdir()  # a deleted stack's folder
    (h.files / "0000000000000000gone-0.png").write_bytes(b"deleted entry")  # a delete that stopped
    (h.files / f".x-0.png.{dead_pid()}.abcd.tmp").write_bytes(b"tmp")
    History(tmp_path)
    assert sorted(p.name for p in h.files.iterdir()) == kept.files
    assert list(h.stacks.iterdir()) == []
    with sqlite3.connect(h.path) as db:
        rows = sorted(r[0] for r in db.execute("SELECT prompt FROM entries"))
    assert rows == ["busy", "kept"]
    assert [e.id for e in h.list()] == [kept.id]  # a `writing` entry is never listed
    assert h.integrity() == "ok"


def test_a_batch_is_recorded_whole_or_not_at_all(tmp_path, monkeypatch):
    """A served batch's entries go in with one transaction to begin and one to end; a failure
    while writing their files leaves none of them."""
    from llmdit_cli import history as hist

    h = hist.History(tmp_path)
    items = [
        (h.new_entry("generate", "demo", "z-image", {"seed": k}, 1, prompt=f"p{k}", seed=k), [b"png"]) for k in range(3)
    ]
    commits = []
    real = h._transaction
    monkeypatch.setattr(h, "_transaction", lambda: commits.append(1) or real())
    made = h.add_many(items)
    assert len(commits) == 2 and sorted(e.prompt for e in h.list()) == ["p0", "p1", "p2"]
    assert sorted(p.name for p in h.files.iterdir()) == sorted(e.files[0] for e in made)
    broken = [(h.new_entry("generate", "demo", "z-image", {}, 1, prompt=f"q{k}"), [b"png"]) for k in range(2)]
    monkeypatch.setattr(hist, "write_synced", lambda path, data: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        h.add_many(broken)
    assert sorted(e.prompt for e in h.list()) == ["p0", "p1", "p2"] and h.integrity() == "ok"
    assert sorted(p.name for p in h.files.iterdir()) == sorted(e.files[0] for e in made)


def test_the_history_schema_is_versioned(tmp_path):
    from llmdit_cli.errors import LlmditError
    from llmdit_cli.history import SCHEMA_VERSION, History

    h = History(tmp_path)
    with sqlite3.connect(h.path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(LlmditError, match="newer than this llmdit knows"):
        History(tmp_path)


def test_logs_go_to_stderr_and_stdout_stays_empty(tmp_path):
    import subprocess
    import sys

    from helpers import free_port

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "llmdit_cli", "serve", "--model", "demo", "--port", str(port)]
    cmd += ["--data-dir", str(tmp_path / "data")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    import http.client

    try:
        for _ in range(240):  # bounded: until it listens
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.5)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert out == b""
    assert b'"GET /health HTTP/1.1" 200' in err  # uvicorn's access log, on stderr
