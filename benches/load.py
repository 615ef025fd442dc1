#!/usr/bin/env python3
"""Load benchmark for flagpost, run by hand (not in CI): `python3 benches/load.py`.

Builds the release binary and the ceiling server (examples/ceiling.rs), generates the benchmark
data set (benches/gen_features.py, its defaults: 200 flags), starts flagpost in offline mode
pinned to core 0, drives it with wrk pinned to core 1 (-t2 -c64) for each endpoint, then does
the same against the ceiling server (a minimal hyper server returning the same bytes), and
writes benches/RESULTS.md: requests/s, p50, p99, the ratio to the ceiling, RSS idle and after
load, time from exec to ready, scaling with the number of flags, and memory under 100,000
distinct invalid tokens (edge mode, chained to an offline flagpost as its upstream).

Everything runs on loopback, each wrk run is bounded in time. Options: --duration SECONDS
(default 15), --runs N (default 3, medians are reported), --quick (3 s x 1 run, for a try),
--before BIN (an older flagpost binary: the four endpoints are measured with it too, in the
same run, runs alternating between the two binaries, and compared), --compare-only ENDPOINT
(with --before: only that comparison, printed; repeatable).
"""

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "flagpost")
CEILING = os.path.join(ROOT, "target", "release", "examples", "ceiling")
CLIENT = "*:development.bench0client0token0000000000000000000000000000000000000000"
FRONTEND = "*:development.bench0frontend0token00000000000000000000000000000000000000"
INVALID = "*:development.not0a0known0token000000000000000000000000000000000000000000"
# Below the ephemeral range (32768-60999 on Linux): probing a port in it before the server
# listens can connect a socket to itself and hold the port in TIME-WAIT.
FLAGPOST_PORT, CEILING_PORT, EDGE_PORT = 19630, 19640, 19650
CONTEXT = {"context": {"userId": "123", "appName": "bench", "sessionId": "s-42",
                       "properties": {"country": "NO", "tier": "pro", "appVersion": "2.3.1"}}}

KEEP_FROM = "## Hot functions (criterion)"

TARGETS = {  # endpoint -> minimum ratio to its ceiling
    "GET /api/frontend": 0.08,
    "POST /api/frontend": 0.07,
    "GET /api/client/features": 0.75,
    "invalid token": 0.50,
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def ensure_wrk():
    if shutil.which("wrk"):
        return
    log("installing wrk (Debian package)")
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)


def build():
    log("building the release binary and the ceiling server")
    subprocess.run(["cargo", "build", "--release", "--bin", "flagpost", "--example", "ceiling"],
                   cwd=ROOT, check=True)


def gen(count, path):
    subprocess.run([sys.executable, os.path.join(ROOT, "benches", "gen_features.py"),
                    "--count", str(count), "--out", path], check=True, stdout=subprocess.DEVNULL)


def config(work, features, port, extra=""):
    path = os.path.join(work, f"config-{port}-{os.path.basename(features)}.toml")
    with open(path, "w") as f:
        f.write(f"""mode = "offline"
[server]
interface = "127.0.0.1"
port = {port}
shutdown_delay = "0s"
max_in_flight = 100000
[log]
format = "plain"
[offline]
features_file = "{features}"
reload_interval = "0s"
client_tokens = ["{CLIENT}"]
frontend_tokens = ["{FRONTEND}"]
{extra}""")
    return path


def http_status(port, path="/ready"):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(64)
            return int(head.split()[1])
    except (OSError, IndexError, ValueError):
        return None


def start(args, port, core="0"):
    """Starts a server pinned to `core`; returns (process, milliseconds from exec to ready)."""
    env = dict(os.environ, RUST_LOG="warn")
    t0 = time.monotonic()
    p = subprocess.Popen(["taskset", "-c", core] + args, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = t0 + 30
    while time.monotonic() < deadline:
        if http_status(port) == 200:
            return p, (time.monotonic() - t0) * 1000
        if p.poll() is not None:
            raise RuntimeError(f"{args[0]} exited with {p.returncode}")
    p.kill()
    raise RuntimeError(f"{args} not ready in 30 s")


def stop(p):
    p.terminate()
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def rss_kib(p, field="VmRSS"):
    # taskset execs the server in place: the pid is the server's.
    with open(f"/proc/{p.pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def fetch(port, path, token, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                 headers={"Authorization": token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read()
    except urllib.error.HTTPError as e:
        return e.read()


def lua_post(work, body):
    path = os.path.join(work, "post.lua")
    with open(path, "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write(f"wrk.body = {json.dumps(body)}\n")
        f.write('wrk.headers["Content-Type"] = "application/json"\n')
    return path


def lua_distinct_tokens(work):
    path = os.path.join(work, "distinct.lua")
    with open(path, "w") as f:
        f.write("""local threads = {}
function setup(thread) thread:set("id", #threads) table.insert(threads, thread) end
function init(args) counter = 0 prefix = "*:development.invalid-" .. id .. "-" end
function request()
  counter = counter + 1
  return wrk.format("GET", "/api/frontend", {["Authorization"] = prefix .. counter})
end
function done(summary, latency, requests) end
""")
    return path


def to_ms(value, unit):
    v = float(value)
    return {"us": v / 1000, "ms": v, "s": v * 1000}[unit]


def wrk(url, seconds, token=None, script=None, connections=64):
    cmd = ["taskset", "-c", "1", "wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if token:
        cmd += ["-H", f"Authorization: {token}"]
    if script:
        cmd += ["-s", script]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+(?:us|ms|s))$", out, re.M))
    parse = lambda s: to_ms(*re.match(r"([\d.]+)(us|ms|s)", s).groups())
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": parse(lat["50"]), "p99": parse(lat["99"]), "requests": total,
            "non2xx": int(non2xx.group(1)) if non2xx else 0}


def median_run(runs):
    by_rps = sorted(runs, key=lambda r: r["rps"])
    return by_rps[len(by_rps) // 2]


def measure(url, seconds, nruns, **kw):
    runs = [wrk(url, seconds, **kw) for _ in range(nruns)]
    m = median_run(runs)
    m["all_rps"] = [round(r["rps"]) for r in runs]
    return m


def write_section(section, lines):
    """Replaces the section of benches/RESULTS.md that starts with `section` (a `## ` heading)
    with `lines` (the heading included), keeping the rest; appends it when there is none."""
    out = os.path.join(ROOT, "benches", "RESULTS.md")
    with open(out) as f:
        old = f.read()
    at = old.find(section)
    if at >= 0:
        nxt = old.find("\n## ", at + len(section))
        old = old[:at].rstrip("\n") + ("\n\n" + old[nxt + 1:] if nxt >= 0 else "")
    with open(out, "w") as f:
        f.write(old.rstrip("\n") + "\n\n" + "\n".join(lines).rstrip("\n") + "\n")


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} vCPU ({model}), Linux {platform.release()}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--before", help="an older flagpost binary, measured for comparison")
    ap.add_argument("--compare-only", action="append", metavar="ENDPOINT",
                    help="with --before: only compare this endpoint (repeatable, e.g. "
                         "\"invalid token\"), print the result, write nothing")
    a = ap.parse_args()
    if a.quick:
        a.duration, a.runs = 3, 1
    ensure_wrk()
    build()
    work = tempfile.mkdtemp(prefix="flagpost-load-")
    features = os.path.join(work, "features-200.json")
    gen(200, features)
    cfg = config(work, features, FLAGPOST_PORT)

    # Time from exec to ready: median of 5 starts.
    ready = []
    for _ in range(5):
        p, ms = start([BIN, "--config", cfg], FLAGPOST_PORT)
        ready.append(ms)
        stop(p)
    ready_ms = statistics.median(ready)
    log(f"exec to ready: {ready_ms:.1f} ms (median of {ready})")

    p, _ = start([BIN, "--config", cfg], FLAGPOST_PORT)
    rss_idle = rss_kib(p)
    base = f"http://127.0.0.1:{FLAGPOST_PORT}"
    get_path = "/api/frontend?userId=123&appName=bench"
    post_body = json.dumps(CONTEXT)
    bodies = {
        "frontend": fetch(FLAGPOST_PORT, get_path, FRONTEND),
        "client": fetch(FLAGPOST_PORT, "/api/client/features", CLIENT),
        "invalid": fetch(FLAGPOST_PORT, get_path, INVALID),
    }
    assert b"toggles" in bodies["frontend"] and b"features" in bodies["client"]
    assert b"token_invalid" in bodies["invalid"], bodies["invalid"]
    post_script = lua_post(work, post_body)
    endpoints = [
        ("GET /api/frontend", get_path, FRONTEND, None),
        ("POST /api/frontend", "/api/frontend", FRONTEND, post_script),
        ("GET /api/client/features", "/api/client/features", CLIENT, None),
        ("invalid token", get_path, INVALID, None),
    ]
    if a.compare_only:
        stop(p)
        chosen = [e for e in endpoints if e[0] in a.compare_only]
        assert a.before and chosen, "--compare-only needs --before and a known endpoint"
        for name, r in before_and_after(a, cfg, chosen).items():
            log(f"{name}: before {r['before']['all']}, now {r['now']['all']}")
        return
    results = {}
    for name, path, token, script in endpoints:
        log(f"flagpost: {name}")
        results[name] = measure(base + path, a.duration, a.runs, token=token, script=script)
    rss_after = rss_kib(p)
    rss_peak = rss_kib(p, "VmHWM")
    stop(p)
    compared = before_and_after(a, cfg, endpoints) if a.before else None

    ceilings = {}
    for kind in ["frontend", "client", "invalid"]:
        body_file = os.path.join(work, f"{kind}.body")
        with open(body_file, "wb") as f:
            f.write(bodies[kind])
        c, _ = start([CEILING, f"127.0.0.1:{CEILING_PORT}", body_file], CEILING_PORT)
        log(f"ceiling: {kind} ({len(bodies[kind])} bytes)")
        ceilings[kind] = measure(f"http://127.0.0.1:{CEILING_PORT}/", a.duration, a.runs)
        stop(c)
    ceiling_of = {"GET /api/frontend": "frontend", "POST /api/frontend": "frontend",
                  "GET /api/client/features": "client", "invalid token": "frontend"}

    # Scaling: exec-to-ready (includes reading and compiling the flags) and frontend latency.
    scaling = []
    for count in [200, 2000, 10000]:
        f = os.path.join(work, f"features-{count}.json")
        gen(count, f)
        cfg_n = config(work, f, FLAGPOST_PORT)
        p, ms = start([BIN, "--config", cfg_n], FLAGPOST_PORT)
        r = wrk(base + get_path, max(3, a.duration // 3), token=FRONTEND, connections=8)
        size = len(fetch(FLAGPOST_PORT, get_path, FRONTEND))
        scaling.append((count, ms, r["p50"], r["p99"], r["rps"], size, rss_kib(p)))
        stop(p)
        log(f"scaling {count}: ready {ms:.0f} ms, p50 {r['p50']:.2f} ms")

    # 100,000 distinct invalid tokens against edge mode (upstream: an offline flagpost).
    up, _ = start([BIN, "--config", cfg], FLAGPOST_PORT)
    edge_cfg = os.path.join(work, "edge.toml")
    with open(edge_cfg, "w") as f:
        f.write(f"""mode = "edge"
[server]
interface = "127.0.0.1"
port = {EDGE_PORT}
shutdown_delay = "0s"
max_in_flight = 100000
[edge]
upstream_url = "http://127.0.0.1:{FLAGPOST_PORT}"
tokens = ["{CLIENT}"]
token_cache_size = 10000
""")
    edge, _ = start([BIN, "--config", edge_cfg], EDGE_PORT)
    rss_before = rss_kib(edge)
    thrown, attack_seconds = 0, 0
    distinct = lua_distinct_tokens(work)
    t0 = time.monotonic()
    while thrown < 100_000 and time.monotonic() - t0 < 300:
        r = wrk(f"http://127.0.0.1:{EDGE_PORT}/api/frontend", 10, script=distinct)
        thrown += r["requests"]
    attack_seconds = time.monotonic() - t0
    rss_attack = rss_kib(edge)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{EDGE_PORT}/metrics").read().decode()
    cache = re.search(r'flagpost_token_cache_entries\{state="invalid"\} (\d+)', metrics)
    stop(edge)
    stop(up)

    write_results(a, ready_ms, ready, rss_idle, rss_after, rss_peak, results, ceilings, ceiling_of,
                  bodies, scaling, (thrown, attack_seconds, rss_before, rss_attack,
                                    int(cache.group(1)) if cache else None), compared)
    shutil.rmtree(work, ignore_errors=True)


def before_and_after(a, cfg, endpoints):
    """Each endpoint measured with the older binary and with this one, one run each in turn
    (before, now, before, now, ...), so that both see the same moments of a noisy machine."""
    base = f"http://127.0.0.1:{FLAGPOST_PORT}"
    out = {}
    for name, path, token, script in endpoints:
        runs = {"before": [], "now": []}
        for _ in range(a.runs):
            for label, binary in (("before", a.before), ("now", BIN)):
                p, _ = start([binary, "--config", cfg], FLAGPOST_PORT)
                runs[label].append(wrk(base + path, a.duration, token=token, script=script))
                stop(p)
        out[name] = {label: {"rps": statistics.median(r["rps"] for r in rs),
                             "p99": statistics.median(r["p99"] for r in rs),
                             "all": [round(r["rps"]) for r in rs]}
                     for label, rs in runs.items()}
        b, n = out[name]["before"], out[name]["now"]
        log(f"{name}: before {b['rps']:,.0f} req/s p99 {b['p99']:.2f} ms, now {n['rps']:,.0f} req/s "
            f"p99 {n['p99']:.2f} ms ({n['rps'] / b['rps']:.2f}x)")
    return out


def compared_lines(a, compared):
    if not compared:
        return []
    lines = [
        "",
        "## Against an older build",
        "",
        f"`--before {a.before}`, in the same run: each endpoint measured with both binaries, one",
        f"{a.duration} s run each in turn ({a.runs} runs each; medians, all runs in brackets).",
        "",
        "| endpoint | before req/s | now req/s | now / before | p99 before | p99 now |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in compared.items():
        b, n = c["before"], c["now"]
        lines.append(f"| {name} | {b['rps']:,.0f} {b['all']} | {n['rps']:,.0f} {n['all']} | "
                     f"{n['rps'] / b['rps']:.2f} | {b['p99']:.2f} ms | {n['p99']:.2f} ms |")
    return lines


def write_results(a, ready_ms, ready, rss_idle, rss_after, rss_peak, results, ceilings, ceiling_of,
                  bodies, scaling, attack, compared=None):
    lines = [
        "# flagpost load benchmark results",
        "",
        f"Written by `python3 benches/load.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"Machine: {machine()}. flagpost (release, offline mode, 200 flags from",
        "`benches/gen_features.py` defaults) and the ceiling server (`examples/ceiling.rs`, a",
        "minimal hyper server returning the same bytes) each pinned to core 0 with `taskset -c 0`;",
        f"`wrk -t2 -c64 -d{a.duration}s` pinned to core 1. Medians of {a.runs} runs (all runs in",
        "brackets). The machine is shared and noisy: compare ratios, not absolute numbers.",
        "",
        "| endpoint | body | flagpost req/s | p50 | p99 | ceiling req/s | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        kind = ceiling_of[name]
        c = ceilings[kind]
        ratio = r["rps"] / c["rps"]
        size = len(bodies["invalid"] if name == "invalid token" else bodies[kind])
        lines.append(
            f"| {name} | {size / 1024:.1f} KiB | {r['rps']:,.0f} {r['all_rps']} | {r['p50']:.2f} ms | "
            f"{r['p99']:.2f} ms | {c['rps']:,.0f} ({len(bodies[kind]) / 1024:.1f} KiB) | "
            f"{ratio:.1%} | ≥ {TARGETS[name]:.0%} | {'yes' if ratio >= TARGETS[name] else 'NO'} |")
    lines += [
        "",
        "The ceiling's own latency with the same bodies (wrk on one core is the limit for small",
        "bodies: its tail grows too):",
        "",
        "| ceiling body | req/s | p50 | p99 | p99 / p50 |",
        "|---|---|---|---|---|",
    ]
    for kind, c in ceilings.items():
        lines.append(f"| {kind} ({len(bodies[kind]) / 1024:.1f} KiB) | {c['rps']:,.0f} | {c['p50']:.2f} ms | "
                     f"{c['p99']:.2f} ms | {c['p99'] / c['p50']:.2f} |")
    lines += [
        "",
        "| measure | value | target | met |",
        "|---|---|---|---|",
        f"| time from exec to ready | {ready_ms:.1f} ms (median of {', '.join(f'{x:.1f}' for x in ready)}) | ≤ 30 ms | {'yes' if ready_ms <= 30 else 'NO'} |",
        f"| RSS idle | {rss_idle / 1024:.1f} MiB | | |",
        f"| RSS after load | {rss_after / 1024:.1f} MiB (peak {rss_peak / 1024:.1f} MiB) | ≤ 25 MiB | {'yes' if rss_after / 1024 <= 25 else 'NO'} |",
    ]
    for name, r in results.items():
        ok = r["p99"] <= 2 * r["p50"]
        lines.append(f"| p99 / p50, {name} | {r['p99'] / r['p50']:.2f} | ≤ 2 | {'yes' if ok else 'NO'} |")
    lines += [
        "",
        "## Scaling with the number of flags",
        "",
        "Each set from `gen_features.py --count N`; exec to ready includes reading, compiling and",
        "publishing the flags; latency of `GET /api/frontend` (all flags evaluated) with `wrk -c8`.",
        "",
        "| flags | exec to ready | p50 | p99 | req/s | response | RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for count, ms, p50, p99, rps, size, rss in scaling:
        lines.append(f"| {count:,} | {ms:.0f} ms | {p50:.2f} ms | {p99:.2f} ms | {rps:,.0f} | "
                     f"{size / 1024:.0f} KiB | {rss / 1024:.1f} MiB |")
    thrown, seconds, before, after, cache = attack
    lines += [
        "",
        "## Memory under distinct invalid tokens",
        "",
        "Edge mode (upstream: an offline flagpost), `token_cache_size = 10000`; wrk sends a new,",
        "unknown token with every request, each validated upstream and remembered as invalid.",
        "",
        f"| tokens thrown | time | RSS before | RSS after | invalid tokens remembered |",
        "|---|---|---|---|---|",
        f"| {thrown:,} | {seconds:.0f} s | {before / 1024:.1f} MiB | {after / 1024:.1f} MiB | {cache} |",
    ] + compared_lines(a, compared) + [
        "",
    ]
    out = os.path.join(ROOT, "benches", "RESULTS.md")
    # Sections written by hand after this script's part (criterion numbers, notes) are kept.
    kept = ""
    if os.path.exists(out):
        with open(out) as f:
            old = f.read()
        at = old.find(KEEP_FROM)
        if at >= 0:
            kept = "\n" + old[at:]
    with open(out, "w") as f:
        f.write("\n".join(lines) + kept)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
