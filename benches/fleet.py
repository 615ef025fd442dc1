#!/usr/bin/env python3
"""Fleet benchmark for flagpost, run by hand (not in CI): `python3 benches/fleet.py`.

Starts a `redis-server` on a free port, a scripted upstream written here (counting every
request by path), and release binaries of flagpost in edge mode (`refresh_interval = 1s`,
pinned to core 0; this script on core 1). Measures:

1. upstream requests per minute with 1, 3 and 5 instances sharing one Redis, and with 3
   instances without Redis for comparison (one window of --seconds each, scaled to a minute);
2. the time from exec to `/ready` 200 of a new instance while the upstream is down and Redis
   holds the fleet's snapshot (5 starts);
3. the delay from a change upstream to every instance of a 3-instance fleet serving it, and to
   the first one (the poller) serving it (10 changes).

Writes the section "## Fleet on one Redis" of benches/RESULTS.md (replacing an older one).
Options: --seconds 60 (window per fleet size), --no-write (print only).
"""

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402

SECTION = "## Fleet on one Redis"
BASE_PORT = 19800
UPSTREAM_PORT = 19790
TOKEN = "*:development.fleet0client0dev0000000000000000000000000000000000000000000"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream:
    """/edge/validate for TOKEN, /api/client/features with ETags and meta.revisionId, 202 for
    the rest; counts every request by path."""

    def __init__(self, port, doc):
        self.doc = doc
        self.revision = 1
        self.counts = {}
        self.lock = threading.Lock()
        up = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def count(self):
                path = self.path.split("?", 1)[0]
                with up.lock:
                    up.counts[path] = up.counts.get(path, 0) + 1

            def send(self, status, body=b"", headers=()):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                self.count()
                n = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(n) if n else b""
                if self.path == "/edge/validate":
                    asked = json.loads(data).get("tokens", [])
                    known = [{"token": t, "type": "client", "environment": "development",
                              "projects": ["*"]} for t in asked if t == TOKEN]
                    self.send(200, json.dumps({"tokens": known}).encode())
                else:
                    self.send(202)

            def do_GET(self):
                self.count()
                if self.path.split("?", 1)[0] != "/api/client/features":
                    return self.send(404, b'{"message":"not found"}')
                if self.headers.get("Authorization") != TOKEN:
                    return self.send(401, b'{"message":"no"}')
                with up.lock:
                    doc, revision = up.doc, up.revision
                etag = f'"{hashlib.sha1(doc).hexdigest()[:8]}:{revision}"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
                self.send(200, doc, [("ETag", etag)])

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def toggle(self):
        with self.lock:
            doc = json.loads(self.doc)
            doc["features"][0]["enabled"] = not doc["features"][0]["enabled"]
            self.revision += 1
            doc["meta"] = {"revisionId": self.revision}
            self.doc = json.dumps(doc).encode()
            return doc["features"][0]["name"], doc["features"][0]["enabled"]

    def take_counts(self):
        with self.lock:
            counts, self.counts = self.counts, {}
        return counts

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Redis:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="flagpost-fleet-redis-")
        self.port = free_port()
        self.p = subprocess.Popen(
            ["taskset", "-c", "1", "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(7) == b"+PONG\r\n":
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def close(self):
        self.p.terminate()
        self.p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def config(work, port, name, redis, namespace):
    path = os.path.join(work, f"{name}.toml")
    store = (f'[store]\nredis_url = "redis://127.0.0.1:{redis.port}"\nnamespace = "{namespace}"\n'
             if redis else "")
    with open(path, "w") as f:
        f.write(f"""mode = "edge"
instance_id = "{name}"
[server]
interface = "127.0.0.1"
port = {port}
shutdown_delay = "0s"
shutdown_grace = "2s"
[log]
format = "plain"
[edge]
upstream_url = "http://127.0.0.1:{UPSTREAM_PORT}"
tokens = ["{TOKEN}"]
refresh_interval = "1s"
{store}""")
    return path


def start(work, port, name, redis, namespace):
    return load.start([load.BIN, "--config", config(work, port, name, redis, namespace)], port)


def served_enabled(port, flag):
    body = json.loads(load.fetch(port, "/api/client/features", TOKEN))
    for f in body.get("features", []):
        if f["name"] == flag:
            return f["enabled"]
    return None


def requests_per_minute(work, up, redis, n, seconds, namespace):
    procs = [start(work, BASE_PORT + i, f"{namespace}-{i}", redis, namespace)[0] for i in range(n)]
    try:
        time.sleep(3)  # elections and first fetches settle
        up.take_counts()
        time.sleep(seconds)
        counts = up.take_counts()
    finally:
        for p in procs:
            load.stop(p)
    scale = 60 / seconds
    per_min = {k: v * scale for k, v in counts.items()}
    log(f"{n} instances, Redis {'on' if redis else 'off'}: "
        + ", ".join(f"{k} {v:.0f}/min" for k, v in sorted(per_min.items())))
    return per_min


def boot_and_changes(work, up, redis):
    procs = [start(work, BASE_PORT + i, f"chg-{i}", redis, "bench-changes")[0] for i in range(3)]
    ports = [BASE_PORT + i for i in range(3)]
    try:
        time.sleep(3)
        all_delays, first_delays = [], []
        for _ in range(10):
            flag, value = up.toggle()
            t0 = time.monotonic()
            first = None
            pending = set(ports)
            while pending:
                for port in list(pending):
                    if served_enabled(port, flag) == value:
                        pending.discard(port)
                        if first is None:
                            first = time.monotonic() - t0
                if time.monotonic() - t0 > 30:
                    raise RuntimeError("a change did not reach every instance in 30 s")
                time.sleep(0.005)
            all_delays.append(time.monotonic() - t0)
            first_delays.append(first)
            time.sleep(0.3)
        log(f"change to all 3: p50 {statistics.median(all_delays) * 1000:.0f} ms, "
            f"max {max(all_delays) * 1000:.0f} ms; first: p50 {statistics.median(first_delays) * 1000:.0f} ms")
        # Upstream down: new instances boot from Redis.
        up.close()
        boots = []
        for i in range(5):
            port = BASE_PORT + 10 + i
            p, ready_ms = start(work, port, f"boot-{i}", redis, "bench-changes")
            same = load.fetch(port, "/api/client/features", TOKEN) == load.fetch(ports[0], "/api/client/features", TOKEN)
            load.stop(p)
            boots.append((ready_ms, same))
        log("boot from Redis with upstream down: " + ", ".join(f"{b:.0f} ms" for b, _ in boots))
    finally:
        for p in procs:
            load.stop(p)
    return all_delays, first_delays, boots


def write(rows, baseline, seconds, changes):
    all_delays, first_delays, boots = changes
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    paths = sorted({k for r in rows.values() for k in r} | set(baseline))

    def cell(counts, path):
        return f"{counts.get(path, 0):.0f}"

    s = [SECTION, "",
         f"Written by `python3 benches/fleet.py` on {when}. Machine: {load.machine()}. Release",
         "binaries in edge mode (`refresh_interval = 1s`, 200 flags, one startup token) pinned to",
         "core 0, a local `redis-server` and a scripted upstream (this script) on core 1.", "",
         f"Upstream requests per minute, by path (a {seconds} s window scaled to a minute, after the",
         "fleet settled):", "",
         "| instances | " + " | ".join(f"`{p}`" for p in paths) + " |",
         "|---|" + "---|" * len(paths)]
    for n, counts in rows.items():
        s.append(f"| {n}, one Redis | " + " | ".join(cell(counts, p) for p in paths) + " |")
    s.append("| 3, no Redis | " + " | ".join(cell(baseline, p) for p in paths) + " |")
    boot_ms = [b for b, _ in boots]
    s += ["", "| measure | median | max | runs |", "|---|---|---|---|",
          f"| a new instance ready from Redis, upstream down (exec to `/ready` 200) | "
          f"{statistics.median(boot_ms):.0f} ms | {max(boot_ms):.0f} ms | {len(boots)}"
          f" (same body as the fleet: {sum(1 for _, same in boots if same)} of {len(boots)}) |",
          f"| a change upstream served by every instance of 3 | {statistics.median(all_delays) * 1000:.0f} ms | "
          f"{max(all_delays) * 1000:.0f} ms | {len(all_delays)} |",
          f"| the same, by the first instance (the poller) | {statistics.median(first_delays) * 1000:.0f} ms | "
          f"{max(first_delays) * 1000:.0f} ms | {len(first_delays)} |", "",
         "The change delays include up to one `refresh_interval` (1 s) before the poller asks; the",
         "difference between the two rows is the fleet's own propagation (write, announce, load).", ""]
    load.write_section(SECTION, s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    if not shutil.which("redis-server"):
        sys.exit("redis-server is needed (apt-get install redis-server)")
    os.sched_setaffinity(0, {1})
    log("building the release binary")
    subprocess.run(["cargo", "build", "--release", "--bin", "flagpost"], cwd=load.ROOT, check=True)
    work = tempfile.mkdtemp(prefix="flagpost-fleet-")
    features = os.path.join(work, "features.json")
    load.gen(200, features)
    with open(features, "rb") as f:
        doc = f.read()
    up = Upstream(UPSTREAM_PORT, doc)
    redis = Redis()
    try:
        rows = {n: requests_per_minute(work, up, redis, n, a.seconds, f"bench-{n}") for n in (1, 3, 5)}
        baseline = requests_per_minute(work, up, None, 3, a.seconds, "bench-none")
        changes = boot_and_changes(work, up, redis)
    finally:
        redis.close()
    if not a.no_write:
        write(rows, baseline, a.seconds, changes)


if __name__ == "__main__":
    main()
