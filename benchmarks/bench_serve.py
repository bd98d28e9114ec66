"""Requests per second and latency of `llmdit serve`'s /v1/images/generations against the same work
in-process, with 1 and 4 concurrent clients.

    OMP_NUM_THREADS=1 python benchmarks/bench_serve.py [--rounds 5] [--size 128] [--steps 8]

The server is a real `llmdit serve --model demo` subprocess on 127.0.0.1. "In-process" runs what
the server's handler runs, without HTTP: the request checked into an engine request
(`serve.app.image_request`), `Engine.generate`, the PNG with its settings, base64. The clients are
threads (N at once, each sending its requests one after another). Rounds alternate in-process and
server (A B A B ...), and the figures are medians over rounds. The ratio is server / in-process:
the cost of HTTP, JSON, the queue and the worker thread.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

PROMPT = "a red circle on a blue background"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, *extra: str) -> subprocess.Popen:
    """`llmdit serve --model demo` on `port` (with `extra` flags), once it answers /health."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [
        sys.executable,
        "-m",
        "llmdit_cli",
        "serve",
        "--model",
        "demo",
        "--port",
        str(port),
        "--max-queue",
        "64",
        "-q",
        *extra,
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(240):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"server did not start: {proc.stderr.read().decode()[-2000:]}")


def body(seed: int, size: int, steps: int) -> dict:
    return {"prompt": PROMPT, "size": f"{size}x{size}", "llmdit": {"seed": seed, "steps": steps}}


def over_http(port: int):
    def call(b: dict) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        conn.request("POST", "/v1/images/generations", json.dumps(b), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(data[:300])
        base64.b64decode(json.loads(data)["data"][0]["b64_json"])
        conn.close()

    return call


def in_process():
    from llmdit_cli.config import resolve
    from llmdit_cli.engine import Engine
    from llmdit_cli.pngmeta import png_bytes
    from llmdit_cli.serve.app import ServeConfig
    from llmdit_cli.serve.routes.images import image_request
    from llmdit_cli.serve.schemas import ImagesBody
    from llmdit_cli.serve.settings import ServerSettings

    engine = Engine()
    cfg = ServeConfig(model="demo", settings=ServerSettings({"model": "demo"}))
    engine.model(resolve(flags={"model": "demo"}))[0].pipeline("tokenizer", "text_encoder", "transformer", "vae")

    def call(b: dict) -> None:
        req = image_request(ImagesBody.model_validate(b), cfg, engine)
        for g in engine.generate(req):
            base64.b64encode(png_bytes(g.image, g.settings))

    return call


def run_round(call, clients: int, per_client: int, size: int, steps: int) -> tuple[float, list[float]]:
    """(requests per second, latencies) for `clients` threads sending `per_client` requests each."""
    latencies: list[float] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        for i in range(per_client):
            t = time.perf_counter()
            call(body(1000 * k + i, size, steps))
            with lock:
                latencies.append(time.perf_counter() - t)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return clients * per_client / (time.perf_counter() - start), latencies


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--requests", type=int, default=8, help="requests per round (split over the clients)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    port = free_port()
    server = start_server(port)
    try:
        variants = {"in-process": in_process(), "server": over_http(port)}
        for call in variants.values():  # warm-up: first-run allocations and kernel choices
            call(body(1, args.size, args.steps))
        rows = []
        for clients in (1, 4):
            rps: dict[str, list[float]] = {k: [] for k in variants}
            lat: dict[str, list[float]] = {k: [] for k in variants}
            for _ in range(args.rounds):
                for name, call in variants.items():  # A B A B ...
                    r, latencies = run_round(call, clients, args.requests // clients, args.size, args.steps)
                    rps[name].append(r)
                    lat[name].append(statistics.median(latencies))
            med = {k: (statistics.median(rps[k]), statistics.median(lat[k])) for k in variants}
            rows.append((clients, med))
        print(
            f"# {args.size}x{args.size}, {args.steps} steps, demo model, {args.rounds} rounds of {args.requests} requests"
        )
        print(
            "| clients | in-process req/s | server req/s | server / in-process | in-process median latency | server median latency |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        for clients, med in rows:
            (a_rps, a_lat), (b_rps, b_lat) = med["in-process"], med["server"]
            print(
                f"| {clients} | {a_rps:.2f} | {b_rps:.2f} | {b_rps / a_rps:.3f} | {a_lat * 1000:.0f} ms | {b_lat * 1000:.0f} ms |"
            )
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
