#!/usr/bin/env python3
"""What exporting traces costs, run by hand (not in CI): `python3 benches/otel_cost.py`.

Builds the release binary, starts flagpost in offline mode pinned to core 0 (benchmark data of
benches/gen_features.py, as benches/load.py does) and drives it with wrk pinned to core 1 for
`GET /api/frontend` and an invalid token, in four set-ups measured in turn, run by run, so that
all see the same moments of a noisy machine:

- `before`: an older flagpost binary (`--before BIN`), when given: "off" against today's;
- `off`: no OTLP endpoint (the default);
- `1%`: OTLP/HTTP export to a local receiver, `OTEL_TRACES_SAMPLER=traceidratio`, ratio 0.01;
- `100%`: the same, every request sampled.

The receiver is a small Python HTTP server on core 1 answering 200 to every export (it counts
the bytes); the dropped-span counts are read from /metrics after each run. Results (medians of
`--runs`, default 3, of `--duration` seconds, default 10) are written to benches/RESULTS.md,
section "OpenTelemetry cost".
"""

import argparse
import http.server
import os
import statistics
import sys
import tempfile
import threading
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402  (the shared helpers: build, start, wrk, ...)

PORT = 19660
RECEIVER_PORT = 19661
SECTION = "## OpenTelemetry cost"


class Receiver(http.server.BaseHTTPRequestHandler):
    received = 0
    exports = 0

    def do_POST(self):
        n = int(self.headers.get("content-length", "0"))
        self.rfile.read(n)
        Receiver.received += n
        Receiver.exports += 1
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def spans_dropped(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("flagpost_otel_spans_total{outcome=\"dropped"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--before", help="an older flagpost binary: its numbers are the baseline")
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    load.ensure_wrk()
    if not a.no_build:
        load.build()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", RECEIVER_PORT), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.sched_setaffinity(0, {1})

    work = tempfile.mkdtemp(prefix="flagpost-otel-")
    features = os.path.join(work, "features.json")
    load.gen(200, features)
    cfg = load.config(work, features, PORT)
    endpoint = f"http://127.0.0.1:{RECEIVER_PORT}"
    otel = ["--otel-exporter-otlp-endpoint", endpoint, "--otel-exporter-otlp-protocol",
            "http/protobuf"]
    setups = [("off", load.BIN, [])]
    if a.before:
        setups.insert(0, ("before", a.before, []))
    setups += [
        ("1%", load.BIN, otel + ["--otel-traces-sampler", "traceidratio",
                                 "--otel-traces-sampler-arg", "0.01"]),
        ("100%", load.BIN, otel + ["--otel-traces-sampler", "always_on"]),
    ]
    endpoints = [
        ("GET /api/frontend", "/api/frontend?userId=123&sessionId=s-42", load.FRONTEND),
        ("invalid token", "/api/client/features", load.INVALID),
    ]
    base = f"http://127.0.0.1:{PORT}"
    results = {}
    for name, path, token in endpoints:
        runs = {label: [] for label, _, _ in setups}
        dropped = {label: 0.0 for label, _, _ in setups}
        for _ in range(a.runs):
            for label, binary, extra in setups:
                p, _ = load.start([binary, "--config", cfg] + extra, PORT)
                runs[label].append(load.wrk(base + path, a.duration, token=token))
                if extra:
                    dropped[label] += spans_dropped(PORT)
                load.stop(p)
        results[name] = {
            label: {"rps": statistics.median(r["rps"] for r in rs),
                    "p99": statistics.median(r["p99"] for r in rs),
                    "all": [round(r["rps"]) for r in rs],
                    "dropped": dropped[label]}
            for label, rs in runs.items()}
        for label, r in results[name].items():
            load.log(f"{name} {label}: {r['rps']:,.0f} req/s p99 {r['p99']:.2f} ms "
                     f"(dropped spans {r['dropped']:.0f})")
    server.shutdown()
    write(a, setups, results)


def write(a, setups, results):
    ref = "off"
    lines = [
        SECTION,
        "",
        f"`python3 benches/otel_cost.py --duration {a.duration} --runs {a.runs}"
        + (f" --before {a.before}`" if a.before else "`")
        + f", {load.machine()}. flagpost offline on core 0, wrk -t2 -c64 on core 1 with the",
        "receiver (a Python HTTP server answering 200, OTLP/HTTP protobuf). Every set-up is",
        f"measured in turn, run by run; medians of {a.runs} runs of {a.duration} s, all runs in",
        "brackets; the ratio is to `off` (no endpoint: the default).",
        "",
        "| endpoint | set-up | req/s | / off | p99 | spans dropped |",
        "|---|---|---|---|---|---|",
    ]
    for name, by in results.items():
        for label, _, _ in setups:
            r = by[label]
            lines.append(f"| {name} | {label} | {r['rps']:,.0f} {r['all']} | "
                         f"{r['rps'] / by[ref]['rps']:.2f} | {r['p99']:.2f} ms | "
                         f"{r['dropped']:,.0f} |")
    lines += [
        "",
        f"The receiver took {Receiver.exports:,} exports ({Receiver.received / 1e6:,.1f} MB) in all.",
    ]
    load.write_section(SECTION, lines)


if __name__ == "__main__":
    main()
