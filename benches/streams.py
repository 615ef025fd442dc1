#!/usr/bin/env python3
"""Streaming fan-out benchmark for flagpost, run by hand (not in CI): `python3 benches/streams.py`.

Starts the release binary (offline mode, 200 flags from `gen_features.py`, pinned to core 0)
and, from an asyncio client pinned to core 1, opens N streams (`GET /api/client/streaming`,
each reading its hydration), then changes one flag in the features file and measures, for
N = 100, 1,000 and 10,000:
- the delivery time of the change to every stream, from the file write (which includes up to
  the 20 ms file-check interval) to the client reading the `unleash-updated` frame: p50, p99,
  max. The client reads 10,000 sockets on one core itself, so the late percentiles include its
  own time;
- flagpost's CPU time (user + system, /proc/PID/stat) from the write until every stream has
  the change: the fan-out;
- flagpost's RSS before and with the streams open (/proc/PID/status), and per stream.

Writes the section "## Streaming fan-out" of benches/RESULTS.md (replacing an older one).
Options: --counts 100,1000 (other sizes), --no-write (print only).
"""

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402

SECTION = "## Streaming fan-out"
PORT = 19760
TICK = os.sysconf("SC_CLK_TCK")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def config(work, features):
    path = os.path.join(work, "streams.toml")
    with open(path, "w") as f:
        f.write(f"""mode = "offline"
[server]
interface = "127.0.0.1"
port = {PORT}
shutdown_delay = "0s"
shutdown_grace = "2s"
max_connections = 30000
[streaming]
max_streams = 30000
[log]
format = "plain"
[offline]
features_file = "{features}"
reload_interval = "20ms"
client_tokens = ["{load.CLIENT}"]
frontend_tokens = ["{load.FRONTEND}"]
""")
    return path


def cpu_seconds(p):
    with open(f"/proc/{p.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


REQUEST = (f"GET /api/client/streaming HTTP/1.1\r\nHost: x\r\nAuthorization: {load.CLIENT}\r\n"
           "Accept: text/event-stream\r\n\r\n").encode()


async def open_stream():
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT, limit=1 << 22)
    writer.write(REQUEST)
    await writer.drain()
    seen = b""
    # The hydration frame ends with a blank line after its data line.
    while b"unleash-connected" not in seen or not seen.rstrip(b"\r\n").endswith(b"}"):
        chunk = await reader.read(1 << 20)
        if not chunk:
            raise RuntimeError("stream closed before its hydration")
        seen += chunk
        if b"\n\n" in seen.split(b"unleash-connected", 1)[-1]:
            break
    return reader, writer


async def wait_update(reader, t0):
    buf = b""
    while b"unleash-updated" not in buf:
        chunk = await reader.read(65536)
        if not chunk:
            raise RuntimeError("stream closed before the update")
        buf = buf[-32:] + chunk
    return time.monotonic() - t0


async def run(n, features, doc, work):
    p, _ = load.start([load.BIN, "--config", config(work, features)], PORT)
    try:
        for _ in range(20):
            body = load.fetch(PORT, "/api/client/features", load.CLIENT)
        rss0 = load.rss_kib(p)
        streams = []
        for start in range(0, n, 500):
            streams += await asyncio.gather(*[open_stream() for _ in range(min(500, n - start))])
        await asyncio.sleep(1)
        rss1 = load.rss_kib(p)
        doc["features"][0]["enabled"] = not doc["features"][0]["enabled"]
        waits = [asyncio.ensure_future(wait_update(r, 0)) for r, _ in streams]
        await asyncio.sleep(0.2)
        for w in waits:
            w.cancel()
        cpu0 = cpu_seconds(p)
        t0 = time.monotonic()
        with open(features + ".tmp", "w") as f:
            json.dump(doc, f)
        os.replace(features + ".tmp", features)
        times = await asyncio.gather(*[wait_update(r, t0) for r, _ in streams])
        cpu = cpu_seconds(p) - cpu0
        rss2 = load.rss_kib(p)
        for _, w in streams:
            w.close()
    finally:
        load.stop(p)
    times.sort()
    q = statistics.quantiles(times, n=100, method="inclusive")
    row = dict(n=n, p50=q[49] * 1000, p99=q[98] * 1000, max=times[-1] * 1000, cpu=cpu * 1000,
               rss0=rss0, rss1=rss1, rss2=rss2, per=(rss1 - rss0) * 1024 / n, hydration=len(body))
    log(f"{n} streams: p50 {row['p50']:.1f} ms, p99 {row['p99']:.1f} ms, max {row['max']:.1f} ms, "
        f"fan-out CPU {row['cpu']:.0f} ms, RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB "
        f"({row['per'] / 1024:.1f} KiB per stream)")
    return row


def write(rows, hydration):
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    s = [SECTION, "",
         f"Written by `python3 benches/streams.py` on {when}. Machine: {load.machine()}. Release",
         "binary pinned to core 0, offline mode, 200 flags (`gen_features.py`), a `*` client token;",
         f"each stream reads a {hydration / 1024:.0f} KiB hydration first. The client (Python asyncio,",
         "core 1) opens N streams, then one flag changes in the features file (checked every 20 ms).",
         "Delivery: from the file write to the client reading `unleash-updated` (includes the",
         "file check and the client's own time to read N sockets). CPU: flagpost's user + system",
         "time from the write until every stream had it. RSS per stream: (RSS with the streams",
         "open - RSS before) / N.", "",
         "| streams | delivery p50 | p99 | max | flagpost CPU for the fan-out | RSS before | RSS with streams | per stream |",
         "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s.append(f"| {r['n']:,} | {r['p50']:.1f} ms | {r['p99']:.1f} ms | {r['max']:.1f} ms | "
                 f"{r['cpu']:.0f} ms | {r['rss0'] / 1024:.1f} MiB | {r['rss1'] / 1024:.1f} MiB | "
                 f"{r['per'] / 1024:.1f} KiB |")
    s += ["", "Targets: p99 under 1 s at 10,000 streams; at most 16 KiB per open stream.", ""]
    load.write_section(SECTION, s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="100,1000,10000")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    counts = [int(c) for c in a.counts.split(",")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < max(counts) + 100:
        sys.exit(f"open-file limit {hard} is too low for {max(counts)} streams")
    os.sched_setaffinity(0, {1})
    log("building the release binary")
    subprocess.run(["cargo", "build", "--release", "--bin", "flagpost"], cwd=load.ROOT, check=True)
    work = tempfile.mkdtemp(prefix="flagpost-streams-")
    features = os.path.join(work, "features.json")
    load.gen(200, features)
    with open(features) as f:
        doc = json.load(f)
    rows = [asyncio.run(run(n, features, doc, work)) for n in counts]
    if not a.no_write:
        write(rows, rows[0]["hydration"])


if __name__ == "__main__":
    main()
