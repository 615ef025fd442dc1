#!/usr/bin/env python3
"""Failure and hostile-input benchmark for flagpost, run by hand (not in CI):
`python3 benches/failure.py`.

Starts the release binary against a scripted upstream written here (Python standard library,
threaded) and measures what the integration tests only assert qualitatively:

1. peak RSS while refusing a 200 MiB features body (close-delimited, no length) and a gzip body
   that unpacks to over 200 MiB, both over `upstream_max_body_size` (32 MiB by default), and
   that the last good snapshot is still served afterwards;
2. peak RSS for an accepted 5,000-flag set (`benches/gen_features.py --count 5000`);
3. peak RSS for 64 parallel 1 MiB `/api/client/metrics` bodies with as many flags as fit (over 40,000)
   (rejected: over the 10,000-flag limit);
4. the cost of 3,000 idle keep-alive connections (each after a probe and a frontend poll), and
   how fast memory is given back after they close;
5. the latency of never-seen SDK frontend tokens with and without a flood of anonymous
   `POST /edge/validate` calls (10 threads, 1,000 random tokens each, in a loop), and how many
   tokens the flood got upstream;
6. `GET /api/frontend` p50/p99 (wrk) on a 200-flag environment while another environment's
   10,000-flag snapshot is republished on every poll, next to the same without republishing.

Writes the section "## Failure and hostile input" of benches/RESULTS.md (replacing an older
one, keeping the rest). Options: --quick (shorter runs, for a try).
"""

import argparse
import gzip
import io
import json
import os
import random
import resource
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402  (helpers shared with the load benchmark)

ROOT = load.ROOT
BIN = load.BIN
SECTION = "## Failure and hostile input"
PORT, UPSTREAM_PORT = 19730, 19740  # below the ephemeral range, as in load.py
DEV_CLIENT = "*:development.fail0client0dev00000000000000000000000000000000000000000"
PROD_CLIENT = "*:production.fail0client0prod0000000000000000000000000000000000000000000"
DEV_FRONT = "*:development.fail0frontend0dev000000000000000000000000000000000000000000"
# Frontend tokens the fake upstream accepts on first sight: `*:development.sdk-<anything>`.
SDK_PREFIX = "*:development.sdk-"
MIB = 1024 * 1024


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Upstream:
    """A scripted Unleash server: /edge/validate, /api/client/features per environment, and
    202 for usage and registrations. `features[env]` is bytes, or a callable writing the body
    itself (`stream(wfile)`) with extra headers."""

    def __init__(self, port):
        self.features = {}
        self.churn = {}  # env -> [bytes, bytes]: alternate on every poll
        self.validate_delay = 0.0
        self.asked = 0  # tokens asked about on /edge/validate
        self.served = {"development": 0, "production": 0}  # 200s with a body, per environment
        self.lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *a):
                pass

            def body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def send(self, status, body=b"", headers=()):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                data = self.body()
                if self.path == "/edge/validate":
                    asked = json.loads(data).get("tokens", [])
                    with upstream.lock:
                        upstream.asked += len(asked)
                    if upstream.validate_delay:
                        time.sleep(upstream.validate_delay)
                    known = []
                    for t in asked:
                        kind = upstream.kind_of(t)
                        if kind:
                            env = t.split(":", 1)[1].split(".", 1)[0]
                            known.append({"token": t, "type": kind, "environment": env,
                                          "projects": ["*"]})
                    self.send(200, json.dumps({"tokens": known}).encode())
                else:
                    self.send(202)

            def do_GET(self):
                if not self.path.startswith("/api/client/features"):
                    return self.send(404, b'{"message":"not found"}')
                token = self.headers.get("Authorization", "")
                env = token.split(":", 1)[1].split(".", 1)[0] if ":" in token else ""
                with upstream.lock:
                    churn = upstream.churn.get(env)
                    if churn:
                        churn.reverse()
                        doc = churn[0]
                    else:
                        doc = upstream.features.get(env)
                if doc is None:
                    return self.send(404, b'{"message":"no features"}')
                if callable(doc):
                    return doc(self)
                etag = f'"{hash(doc) & 0xffffffff:x}"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    return self.end_headers()
                with upstream.lock:
                    upstream.served[env] = upstream.served.get(env, 0) + 1
                self.send(200, doc, [("ETag", etag)])

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kind_of(self, token):
        if token in (DEV_CLIENT, PROD_CLIENT):
            return "client"
        if token == DEV_FRONT or token.startswith(SDK_PREFIX):
            return "frontend"
        return None

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def feature_doc(count, seed=42):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    subprocess.run([sys.executable, os.path.join(ROOT, "benches", "gen_features.py"), "--count",
                    str(count), "--seed", str(seed), "--out", path], check=True,
                   stdout=subprocess.DEVNULL)
    with open(path, "rb") as f:
        data = f.read()
    os.unlink(path)
    return data


def huge_items(total):
    """Yields chunks of a valid-looking features body of about `total` bytes."""
    item = json.dumps({"name": "huge-%08d", "type": "release", "enabled": True, "project": "default",
                       "strategies": [{"name": "default", "parameters": {}, "constraints": []}],
                       "variants": [], "impressionData": False, "description": "x" * 300})
    yield b'{"version":2,"features":['
    sent, i = 0, 0
    while sent < total:
        chunk = ",".join(item.replace("%08d", f"{i + k:08d}") for k in range(256))
        if i:
            chunk = "," + chunk
        data = chunk.encode()
        sent += len(data)
        i += 256
        yield data
    yield b'],"segments":[]}'


def stream_huge(total):
    def respond(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()  # no length: the body ends when the connection closes
        try:
            for chunk in huge_items(total):
                handler.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # flagpost stopped reading: the point
    return respond


def gzip_bomb(total):
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as z:
        for chunk in huge_items(total):
            z.write(chunk)
    packed = buf.getvalue()

    def respond(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Content-Length", str(len(packed)))
        handler.end_headers()
        try:
            handler.wfile.write(packed)
        except (BrokenPipeError, ConnectionResetError):
            pass
    return respond, len(packed)


def edge_config(work, tokens, extra=""):
    path = os.path.join(work, f"edge-{random.randrange(1 << 30)}.toml")
    listed = ", ".join(f'"{t}"' for t in tokens)
    with open(path, "w") as f:
        f.write(f"""mode = "edge"
[server]
interface = "127.0.0.1"
port = {PORT}
shutdown_delay = "0s"
max_in_flight = 100000
[log]
format = "plain"
[edge]
upstream_url = "http://127.0.0.1:{UPSTREAM_PORT}"
tokens = [{listed}]
refresh_interval = "1s"
{extra}
""")
    return path


def offline_config(work, features):
    return load.config(work, features, PORT)


def status_kib(p, field):
    return load.rss_kib(p, field)


def reset_peak(p):
    """Starts a new VmHWM from the current RSS (Linux: `5` to clear_refs)."""
    with open(f"/proc/{p.pid}/clear_refs", "w") as f:
        f.write("5")
    return status_kib(p, "VmHWM")


def metric(port, name, *labels):
    """Sum of the samples of `name` whose labels include every one of `labels`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(label in line for label in labels):
            total += float(line.rsplit(" ", 1)[1])
    return total


def too_large():
    return metric(PORT, "flagpost_upstream_requests_total", 'call="features"', 'outcome="too_large"')


def wait_until(what, check, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def http(method, path, token=None, body=None, timeout=10):
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", data=body, method=method,
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# 1 and 2 ------------------------------------------------------------------------------------

def upstream_bodies(work, up, small, five_k):
    rows = []
    up.features = {"development": small}
    p, _ = load.start([BIN, "--config", edge_config(work, [DEV_CLIENT])], PORT)
    try:
        for name, respond, wire in [
            ("200 MiB JSON body, no Content-Length", stream_huge(200 * MIB), "200 MiB"),
            ("gzip bomb", *gzip_bomb_cached),
        ]:
            before = too_large()
            base = reset_peak(p)
            up.features = {"development": respond}
            t0 = time.monotonic()
            wait_until("the refusal", lambda: too_large() > before)
            took = time.monotonic() - t0
            up.features = {"development": small}
            peak = status_kib(p, "VmHWM")
            after = status_kib(p, "VmRSS")
            status, body = http("GET", "/api/client/features", DEV_CLIENT)
            served = len(json.loads(body)["features"]) if status == 200 else status
            wire_size = wire if isinstance(wire, str) else f"{wire / MIB:.2f} MiB"
            rows.append((name, wire_size, base, peak, after, took, served))
            log(f"{name}: peak {peak / 1024:.1f} MiB (before {base / 1024:.1f}), after {after / 1024:.1f}, "
                f"refused in {took:.2f} s, still serving {served} flags")
    finally:
        load.stop(p)

    up.features = {"development": five_k}
    p, ready_ms = load.start([BIN, "--config", edge_config(work, [DEV_CLIENT])], PORT)
    try:
        peak = status_kib(p, "VmHWM")
        after = status_kib(p, "VmRSS")
        status, body = http("GET", "/api/client/features", DEV_CLIENT)
        accepted = (len(five_k), peak, after, ready_ms, len(json.loads(body)["features"]))
        log(f"5,000 flags ({len(five_k) / MIB:.2f} MiB): peak {peak / 1024:.1f} MiB, RSS {after / 1024:.1f} MiB")
    finally:
        load.stop(p)
    return rows, accepted


# 3 ------------------------------------------------------------------------------------------

def metrics_body(flags):
    toggles = {f"{i:x}": {"yes": 1, "no": 0} for i in range(flags)}
    return json.dumps({"appName": "bench", "instanceId": "i-1", "bucket": {
        "start": "2026-12-04T08:00:00Z", "stop": "2026-12-04T08:01:00Z", "toggles": toggles}},
        separators=(",", ":")).encode()


def rejected_metrics(work, features, rounds):
    flags = 50000
    body = metrics_body(flags)
    while len(body) > MIB:  # as many flags as fit the default 1 MiB limit
        flags = int(flags * MIB / len(body)) - 10
        body = metrics_body(flags)
    flags = body.count(b'"yes"')
    p, _ = load.start([BIN, "--config", offline_config(work, features)], PORT)
    try:
        before = status_kib(p, "VmHWM")
        statuses = []

        def send():
            statuses.append(http("POST", "/api/client/metrics", load.CLIENT, body, timeout=30)[0])

        for _ in range(rounds):
            threads = [threading.Thread(target=send) for _ in range(64)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        peak = status_kib(p, "VmHWM")
        after = status_kib(p, "VmRSS")
    finally:
        load.stop(p)
    log(f"64 x {len(body) / MIB:.2f} MiB metrics bodies ({flags} flags): statuses {sorted(set(statuses))}, "
        f"peak {before / 1024:.1f} -> {peak / 1024:.1f} MiB")
    return len(body), flags, rounds, sorted(set(statuses)), before, peak, after


# 4 ------------------------------------------------------------------------------------------

def read_response(s):
    """Reads one HTTP/1.1 response with a Content-Length from a socket."""
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(65536)
    head, body = got.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += s.recv(65536)


def idle_connections(work, features, count=3000):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count * 2 + 200)), hard))
    p, _ = load.start([BIN, "--config", offline_config(work, features)], PORT)
    try:
        for _ in range(20):  # warm the workers
            http("GET", "/api/frontend", load.FRONTEND)
        idle = status_kib(p, "VmRSS")
        conns = [socket.create_connection(("127.0.0.1", PORT)) for _ in range(count)]
        # Each connection as an SDK's: a probe, then a frontend poll (a 15 KiB answer).
        for request in (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
                        f"GET /api/frontend HTTP/1.1\r\nHost: x\r\nAuthorization: {load.FRONTEND}"
                        "\r\n\r\n".encode()):
            for s in conns:
                s.sendall(request)
            for s in conns:
                read_response(s)
        held = status_kib(p, "VmRSS")
        per_conn = (held - idle) * 1024 / count
        t0 = time.monotonic()
        for s in conns:
            s.close()
        samples = []
        back_at = None
        while time.monotonic() - t0 < 15:
            rss = status_kib(p, "VmRSS")
            samples.append((time.monotonic() - t0, rss))
            if back_at is None and rss < 2 * idle:
                back_at = time.monotonic() - t0
            time.sleep(0.25)
        at10 = min(samples, key=lambda s: abs(s[0] - 10))[1]
    finally:
        load.stop(p)
    log(f"{count} idle connections: idle {idle / 1024:.1f} MiB, held {held / 1024:.1f} MiB "
        f"({per_conn / 1024:.1f} KiB each), under 2x idle after {back_at}, RSS at 10 s {at10 / 1024:.1f} MiB")
    return count, idle, held, per_conn, back_at, at10


# 5 ------------------------------------------------------------------------------------------

def first_seen_latencies(n, tag):
    out = []
    for i in range(n):
        token = f"{SDK_PREFIX}{tag}-{i}-{random.randrange(1 << 40):x}"
        t0 = time.monotonic()
        status, _ = http("GET", "/api/frontend", token)
        out.append((time.monotonic() - t0) * 1000)
        assert status == 200, status
    return out


def flood_worker(deadline, results):
    """One flooding client, in its own process on core 1 (flagpost has core 0): 1,000 random
    tokens per request, from a pool of bodies made in advance, on one keep-alive connection."""
    import http.client
    os.sched_setaffinity(0, {1})
    os.nice(19)  # the timing and the upstream on this core go first: flagpost is what is measured
    bodies = [json.dumps({"tokens": ["*:development." + "".join(random.choices(
        string.ascii_lowercase, k=40)) for _ in range(1000)]}).encode() for _ in range(20)]
    answers = {}
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    i = 0
    while time.monotonic() < deadline:
        conn.request("POST", "/edge/validate", bodies[i % len(bodies)],
                     {"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        answers[r.status] = answers.get(r.status, 0) + 1
        i += 1
    conn.close()
    results.put(answers)


def validate_flood(work, up, small, seconds):
    import multiprocessing
    up.features = {"development": small}
    up.validate_delay = 0.02  # 20 ms per upstream validation, like a real server
    p, _ = load.start([BIN, "--config", edge_config(work, [DEV_CLIENT])], PORT)
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {1})  # this script (the upstream, the timing) beside the flood
    try:
        quiet = first_seen_latencies(20, "quiet")
        asked_before = up.asked
        results = multiprocessing.Queue()
        t0 = time.monotonic()
        deadline = t0 + seconds
        workers = [multiprocessing.Process(target=flood_worker, args=(deadline, results))
                   for _ in range(10)]
        for w in workers:
            w.start()
        time.sleep(1)  # let the flood build up before measuring
        loud = first_seen_latencies(20, "loud")
        answers = {}
        for _ in workers:
            for status, n in results.get(timeout=seconds + 60).items():
                answers[status] = answers.get(status, 0) + n
        for w in workers:
            w.join()
        elapsed = time.monotonic() - t0
        asked = up.asked - asked_before - len(loud)
        sent = sum(answers.values()) * 1000
    finally:
        os.sched_setaffinity(0, affinity)
        load.stop(p)
        up.validate_delay = 0.0
    log(f"validate flood: {sent} tokens sent in {elapsed:.1f} s, {asked} asked upstream, answers {answers}; "
        f"SDK token median {statistics.median(quiet):.1f} ms quiet / {statistics.median(loud):.1f} ms flooded")
    return quiet, loud, sent, asked, elapsed, answers


# 6 ------------------------------------------------------------------------------------------

def publish_latency(work, up, small, big_a, big_b, seconds):
    load.ensure_wrk()
    results = {}
    for churn in (False, True):
        up.features = {"development": small, "production": big_a}
        up.churn = {"production": [big_a, big_b]} if churn else {}
        p, _ = load.start([BIN, "--config", edge_config(work, [DEV_CLIENT, PROD_CLIENT])], PORT)
        try:
            http("GET", "/api/frontend", DEV_FRONT)
            published0 = up.served["production"]
            r = load.wrk(f"http://127.0.0.1:{PORT}/api/frontend", seconds, token=DEV_FRONT,
                         connections=8)
            published = up.served["production"] - published0
        finally:
            load.stop(p)
        results[churn] = (r, published)
        log(f"churn={churn}: p50 {r['p50']:.2f} ms p99 {r['p99']:.2f} ms, {r['rps']:.0f} req/s, "
            f"{published:.0f} production publishes")
    up.churn = {}
    return results


def write(sections):
    load.write_section(SECTION, sections)


def main():
    global gzip_bomb_cached
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["upstream", "metrics", "idle", "flood", "publish"],
                    help="run one part and print it, without writing RESULTS.md")
    a = ap.parse_args()
    seconds = 5 if a.quick else 10
    subprocess.run(["cargo", "build", "--release", "--bin", "flagpost"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="flagpost-failure-")
    log("generating the data sets")
    small = feature_doc(200)
    five_k = feature_doc(5000)
    big_a = feature_doc(10000, seed=42)
    doc = json.loads(big_a)
    doc["features"][0]["enabled"] = not doc["features"][0]["enabled"]
    big_b = json.dumps(doc).encode()
    features_path = os.path.join(work, "features.json")
    with open(features_path, "wb") as f:
        f.write(small)
    log("packing the gzip bomb")
    respond, packed = gzip_bomb(211 * 1000 * 1000)
    gzip_bomb_cached = (respond, packed)
    up = Upstream(UPSTREAM_PORT)
    parts = {
        "upstream": lambda: upstream_bodies(work, up, small, five_k),
        "metrics": lambda: rejected_metrics(work, features_path, 3),
        "idle": lambda: idle_connections(work, features_path),
        "flood": lambda: validate_flood(work, up, small, seconds),
        "publish": lambda: publish_latency(work, up, small, big_a, big_b, seconds),
    }
    try:
        if a.only:
            parts[a.only]()
            return
        refusals, accepted = parts["upstream"]()
        rejected = parts["metrics"]()
        idle = parts["idle"]()
        flood = parts["flood"]()
        publish = parts["publish"]()
    finally:
        up.close()

    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    s = [SECTION, "",
         f"Written by `python3 benches/failure.py` on {when}. Machine: {load.machine()}. Release",
         "binary, defaults unless said, against a scripted upstream in the same script. RSS from",
         "`/proc/PID/status` (VmHWM is the peak).", "",
         "### Oversized upstream bodies (limit 32 MiB, decompressed)", "",
         "| upstream answer | on the wire | RSS before | peak RSS while refusing | RSS after | refused within | still served |",
         "|---|---|---|---|---|---|---|"]
    for name, wire, base, peak, after, took, served in refusals:
        s.append(f"| {name} | {wire} | {base / 1024:.1f} MiB | {peak / 1024:.1f} MiB | "
                 f"{after / 1024:.1f} MiB | {took:.2f} s | {served} flags (the last good snapshot) |")
    size, peak, after, ready_ms, served = accepted
    s += ["", "| accepted set | body | peak RSS | RSS when ready | exec to ready |",
          "|---|---|---|---|---|",
          f"| {served:,} flags | {size / MIB:.2f} MiB | {peak / 1024:.1f} MiB | {after / 1024:.1f} MiB | {ready_ms:.0f} ms |"]
    size, flags, rounds, statuses, before, peak, after = rejected
    s += ["", "### Rejected SDK usage bodies", "",
          "| bodies | each | flags each | answered | peak RSS before | peak RSS after | growth | target |",
          "|---|---|---|---|---|---|---|---|",
          f"| {rounds} rounds of 64 in parallel | {size / MIB:.2f} MiB | {flags:,} | {statuses} | "
          f"{before / 1024:.1f} MiB | {peak / 1024:.1f} MiB | +{(peak - before) / 1024:.1f} MiB | ≤ +64 MiB |"]
    count, idle_rss, held, per_conn, back_at, at10 = idle
    back = f"{back_at:.2f} s" if back_at is not None else "not within 15 s"
    s += ["", "### Idle keep-alive connections", "",
          "| connections | RSS idle | RSS holding them | per connection | target | RSS under 2× idle after close | RSS 10 s after close |",
          "|---|---|---|---|---|---|---|",
          f"| {count:,} | {idle_rss / 1024:.1f} MiB | {held / 1024:.1f} MiB | {per_conn / 1024:.1f} KiB | ≤ 16 KiB | {back} | {at10 / 1024:.1f} MiB |"]
    quiet, loud, sent, asked, elapsed, answers = flood
    s += ["", "### `/edge/validate` flood next to first-seen SDK tokens", "",
          f"10 processes, each posting 1,000 random tokens per request in a loop for {elapsed:.0f} s from",
          "one address, on core 1 at nice 19 beside the scripted upstream (20 ms per validation) and",
          "the timing; flagpost alone on core 0. 20 never-seen SDK frontend tokens",
          "(`GET /api/frontend`) timed one after another, without and during the flood.", "",
          "| | SDK token median | SDK token max |", "|---|---|---|",
          f"| no flood | {statistics.median(quiet):.1f} ms | {max(quiet):.1f} ms |",
          f"| during the flood | {statistics.median(loud):.1f} ms | {max(loud):.1f} ms |", "",
          f"Flood: {sent:,} tokens sent, {asked:,} asked upstream, answers by status {dict(sorted(answers.items()))}."]
    s += ["", "### Frontend latency while a 10,000-flag snapshot is published", "",
          "Edge mode, `refresh_interval = 1s`, two environments: `development` (200 flags) served to",
          f"`wrk -t2 -c8 -d{seconds}s GET /api/frontend`; `production` (10,000 flags) answered",
          "unchanged, or alternating between two versions so that every poll publishes it.", "",
          "| production | publishes during the run | req/s | p50 | p99 |", "|---|---|---|---|---|"]
    for churn, label in ((False, "unchanged"), (True, "republished on every poll")):
        r, published = publish[churn]
        s.append(f"| {label} | {published:.0f} | {r['rps']:,.0f} | {r['p50']:.2f} ms | {r['p99']:.2f} ms |")
    s += ["", "flagpost is pinned to one core here: the compile of each publish (on the blocking pool)",
          "shares that core with the request workers, so the tail grows by the scheduler's time",
          "slices while p50 stays; a compile on the request workers would stall the requests queued",
          "on that worker for the whole compile."]
    write(s)
    print("\n".join(s))


gzip_bomb_cached = None

if __name__ == "__main__":
    main()
