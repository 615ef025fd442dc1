#!/usr/bin/env python3
"""Frontend API at scale, run by hand (not in CI): `python3 benches/frontend.py [--before BIN]`.

Release binary pinned to core 0, `wrk` on core 1 (-t2 -c64), offline mode, flag sets from
`gen_features.py` (3 projects). Measures:

1. conditional polls with a realistic mix: 1,000 users (`userId=user-N`), 90% of requests a
   repeat poll with that user's last ETag (fetched before the run), 10% a new context
   (`userId=new-…`, never seen); with remembered ETags (the default) and without
   (`frontend.etag_cache_size = 0`); req/s and flagpost CPU µs per request (/proc/PID/stat),
   and how the answers were made (`flagpost_frontend_answers_total`);
2. per-flag cost of `GET /api/frontend?userId=alice` (unconditional) at 200 / 2,000 / 10,000
   flags, for a `*` token and a `default`-project token: CPU µs per request / flags in scope;
   RSS once loaded, right after the load, and its peak (VmHWM, loading included);
3. the memory the remembered ETags take at 100,000 distinct contexts: RSS after 100,000
   requests with distinct users, with and without remembering.

With `--before BIN` (an older build) part 1 (on the set without random stickiness) and part 2
are also measured for it in the same run.
Writes the section "## Frontend at scale" of benches/RESULTS.md (replacing an older one).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402

SECTION = "## Frontend at scale"
PORT = 19820
ALL = load.FRONTEND
DEFAULT = "default:development.bench0frontend0default0000000000000000000000000000000000"
TICK = os.sysconf("SC_CLK_TCK")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def config(work, features, memo=True):
    path = os.path.join(work, f"frontend-{memo}.toml")
    with open(path, "w") as f:
        f.write(f"""mode = "offline"
[server]
interface = "127.0.0.1"
port = {PORT}
shutdown_delay = "0s"
max_in_flight = 100000
{"" if memo else "[frontend]" + chr(10) + "etag_cache_size = 0"}
[log]
format = "plain"
[offline]
features_file = "{features}"
reload_interval = "0s"
client_tokens = ["{load.CLIENT}"]
frontend_tokens = ["{ALL}", "{DEFAULT}"]
""")
    return path


def cpu(p):
    with open(f"/proc/{p.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def answers(how):
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(rf'flagpost_frontend_answers_total{{how="{how}"}} (\d+)', text)
    return int(m.group(1)) if m else 0


def etag_of(token, user):
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}/api/frontend?userId={user}&sessionId=s-{user}",
                                 headers={"Authorization": token})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers.get("ETag")


def lua_mix(work, etags):
    path = os.path.join(work, "mix.lua")
    with open(path, "w") as f:
        f.write("local etags = {" + ",".join(json.dumps(e) for e in etags) + "}\n")
        f.write(f'local token = {json.dumps(ALL)}\n')
        f.write("""local threads = {}
function setup(thread) thread:set("id", #threads) table.insert(threads, thread) end
function init(args) counter = 0 math.randomseed(id * 7919 + 1) end
function request()
  counter = counter + 1
  if math.random() < 0.9 then
    local i = math.random(1, #etags)
    return wrk.format("GET", "/api/frontend?userId=user-" .. i .. "&sessionId=s-user-" .. i,
      {["Authorization"] = token, ["If-None-Match"] = etags[i]})
  end
  local n = id .. "-" .. counter
  return wrk.format("GET", "/api/frontend?userId=new-" .. n .. "&sessionId=s-new-" .. n,
    {["Authorization"] = token})
end
""")
    return path


def lua_distinct_users(work, token):
    path = os.path.join(work, "users.lua")
    with open(path, "w") as f:
        f.write(f'local token = {json.dumps(token)}\n')
        f.write("""local threads = {}
function setup(thread) thread:set("id", #threads) table.insert(threads, thread) end
function init(args) counter = 0 end
function request()
  counter = counter + 1
  return wrk.format("GET", "/api/frontend?userId=u-" .. id .. "-" .. counter, {["Authorization"] = token})
end
""")
    return path


def run_wrk(url, seconds, script=None, token=None, requests=None):
    cmd = ["taskset", "-c", "1", "wrk", "-t2", "-c64", f"-d{seconds}s"]
    if token:
        cmd += ["-H", f"Authorization: {token}"]
    if script:
        cmd += ["-s", script]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    return (float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            int(re.search(r"(\d+) requests in", out).group(1)))


def without_random(features, work):
    """The same flags with every explicit random stickiness made `default` (stable for a
    context with a userId or sessionId, as the browser SDK always sends a sessionId)."""
    with open(features) as f:
        text = f.read()
    path = os.path.join(work, "f200-stable.json")
    with open(path, "w") as f:
        f.write(text.replace('"stickiness": "random"', '"stickiness": "default"')
                .replace('"stickiness":"random"', '"stickiness":"default"'))
    return path


def conditional(work, features, seconds, runs, binary=None):
    rows = {}
    for memo in (True, False):
        p, _ = load.start([binary or load.BIN, "--config", config(work, features, memo)], PORT)
        try:
            etags = [etag_of(ALL, f"user-{i}") for i in range(1, 1001)]
            script = lua_mix(work, etags)
            results = []
            for _ in range(runs):
                before = {h: answers(h) for h in ("remembered", "spliced", "evaluated")}
                c0 = cpu(p)
                rps, n = run_wrk(f"http://127.0.0.1:{PORT}/api/frontend", seconds, script=script)
                used = cpu(p) - c0
                after = {h: answers(h) - before[h] for h in before}
                results.append((rps, used * 1e6 / n, after, n))
            rps, us, how, n = sorted(results)[len(results) // 2]
        finally:
            load.stop(p)
        rows[memo] = (rps, us, how, n)
        log(f"conditional mix{' (before)' if binary else ''}, memo {'on' if memo else 'off'}: {rps:.0f} req/s, {us:.1f} µs CPU/request, {how}")
    return rows


def per_flag(work, binary, counts, seconds, label):
    out = []
    for count in counts:
        features = os.path.join(work, f"f{count}.json")
        if not os.path.exists(features):
            load.gen(count, features)
        with open(features) as f:
            doc = json.load(f)
        in_default = sum(1 for x in doc["features"] if x.get("project", "default") == "default")
        p, _ = load.start([binary, "--config", config(work, features)], PORT)
        try:
            row = {"count": count}
            time.sleep(2)  # the allocator gives back what loading freed
            row["rss_idle"] = load.rss_kib(p)
            for name, token, scope in (("*", ALL, count), ("default", DEFAULT, in_default)):
                samples = []
                for _ in range(3):
                    c0 = cpu(p)
                    rps, n = run_wrk(f"http://127.0.0.1:{PORT}/api/frontend?userId=alice", seconds, token=token)
                    samples.append((cpu(p) - c0) * 1e6 / n)
                us = statistics.median(samples)
                row[name] = (us, scope, us / scope)
            row["rss"] = load.rss_kib(p)
            row["rss_peak"] = load.rss_kib(p, "VmHWM")
        finally:
            load.stop(p)
        log(f"{label} {count} flags: * {row['*'][0]:.1f} µs/req ({row['*'][2]:.3f} µs/flag), "
            f"default {row['default'][0]:.1f} µs/req ({row['default'][2]:.3f} µs/flag over {row['default'][1]}), "
            f"RSS {row['rss'] / 1024:.1f} MiB")
        out.append(row)
    return out


def memo_memory(work, features):
    rows = {}
    for memo in (True, False):
        p, _ = load.start([load.BIN, "--config", config(work, features, memo)], PORT)
        try:
            for _ in range(20):
                load.fetch(PORT, "/api/frontend?userId=x", ALL)
            rss0 = load.rss_kib(p)
            script = lua_distinct_users(work, ALL)
            # Enough seconds for at least 100,000 distinct users; the count is read back.
            sent = 0
            while sent < 100_000:
                _, n = run_wrk(f"http://127.0.0.1:{PORT}/api/frontend", 5, script=script)
                sent += n
            time.sleep(2)
            rss1 = load.rss_kib(p)
        finally:
            load.stop(p)
        rows[memo] = (rss0, rss1, sent)
        log(f"distinct users, memo {'on' if memo else 'off'}: RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB after {sent} users")
    return rows


def write(conds, now_rows, before_rows, memory, seconds):
    cond, cond_random, cond_before = conds
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    s = [SECTION, "",
         f"Written by `python3 benches/frontend.py` on {when}. Machine: {load.machine()}. Release",
         "binary pinned to core 0, `wrk -t2 -c64` on core 1, offline mode, `gen_features.py` sets",
         f"(3 projects, random-stickiness and date-constrained flags included), {seconds} s runs,",
         "medians of 3. CPU per request from /proc/PID/stat (10 ms ticks) over the run.", "",
         "### Conditional polls (200 flags, `*` token, 1,000 users with `userId` and `sessionId`: 90% repeat polls with their last ETag, 10% new contexts)", "",
         "| flag set | remembered ETags | req/s | flagpost CPU per request | answers: remembered / spliced / evaluated |",
         "|---|---|---|---|---|"]
    for name, c in (("random stickiness made `default`", cond), ("as generated (with random-stickiness flags)", cond_random)):
        for memo in (True, False):
            rps, us, how, n = c[memo]
            s.append(f"| {name} | {'on (default)' if memo else 'off (`etag_cache_size = 0`)'} | {rps:,.0f} | {us:.1f} µs | "
                     f"{how['remembered']:,} / {how['spliced']:,} / {how['evaluated']:,} |")
    on, off = cond[True], cond[False]
    ron, roff = cond_random[True], cond_random[False]
    s += ["", f"Without random stickiness: {on[0] / off[0]:.2f}× the requests per second, {off[1] / on[1]:.2f}× less CPU per request.",
          f"With the generated random-stickiness flags (whose answers really change on every poll): "
          f"{ron[0] / roff[0]:.2f}× the requests per second, {roff[1] / ron[1]:.2f}× less CPU per request.", ""]
    if cond_before:
        b = cond_before[True]
        s += [f"Against the build given with `--before`, in the same run (random stickiness made `default`, remembered "
              f"ETags on): before {b[0]:,.0f} req/s at {b[1]:.1f} µs CPU per request, now {on[0]:,.0f} req/s at {on[1]:.1f} µs: "
              f"{on[0] / b[0]:.3f}× the requests per second, {on[1] / b[1]:.3f}× the CPU per request.", ""]
    s += [
          "### Per-flag cost (`GET /api/frontend?userId=alice`, unconditional)", "",
          "| build | flags | `*` token: CPU/request | per flag | `default` token: CPU/request | flags in scope | per flag | RSS loaded | RSS after load | peak RSS |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for label, rows in (("before", before_rows), ("now", now_rows)):
        for r in rows or []:
            s.append(f"| {label} | {r['count']:,} | {r['*'][0]:.1f} µs | {r['*'][2]:.3f} µs | {r['default'][0]:.1f} µs | "
                     f"{r['default'][1]:,} | {r['default'][2]:.3f} µs | {r['rss_idle'] / 1024:.1f} MiB | "
                     f"{r['rss'] / 1024:.1f} MiB | {r['rss_peak'] / 1024:.1f} MiB |")
    for label, rows in (("before", before_rows), ("now", now_rows)):
        if rows and len(rows) >= 2:
            first, last = rows[0], rows[-1]
            s.append("")
            s.append(f"{label}: per-flag cost at {last['count']:,} flags / at {first['count']:,}: "
                     f"`*` {last['*'][2] / first['*'][2]:.2f}×, `default` {last['default'][2] / first['default'][2]:.2f}×; "
                     f"RSS after load at {last['count']:,} flags {last['rss'] / 1024:.1f} MiB.")
    if before_rows:
        for b, n in zip(before_rows, now_rows):
            s.append("")
            s.append(f"{n['count']:,} flags, now / before: CPU per request `*` {n['*'][0] / b['*'][0]:.2f}×, "
                     f"`default` {n['default'][0] / b['default'][0]:.2f}×; RSS after load {n['rss'] / b['rss']:.2f}×.")
    (r0on, r1on, non), (r0off, r1off, noff) = memory[True], memory[False]
    s += ["", "### Memory of the remembered ETags", "",
          "| remembered ETags | RSS before | RSS after distinct users | users |", "|---|---|---|---|",
          f"| on | {r0on / 1024:.1f} MiB | {r1on / 1024:.1f} MiB | {non:,} |",
          f"| off | {r0off / 1024:.1f} MiB | {r1off / 1024:.1f} MiB | {noff:,} |", "",
          f"The memo's cost at 100,000 contexts (the cache is bounded at 100,000 entries): "
          f"{(r1on - r1off) / 1024:.1f} MiB ({(r1on - r1off) * 1024 / 100000:.0f} bytes per context).", ""]
    load.write_section(SECTION, s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", help="an older flagpost binary, measured for comparison")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    load.ensure_wrk()
    os.sched_setaffinity(0, {1})
    log("building the release binary")
    subprocess.run(["cargo", "build", "--release", "--bin", "flagpost"], cwd=load.ROOT, check=True)
    work = tempfile.mkdtemp(prefix="flagpost-frontend-")
    f200 = os.path.join(work, "f200.json")
    load.gen(200, f200)
    stable = without_random(f200, work)
    cond = conditional(work, stable, a.seconds, 3)
    cond_before = conditional(work, stable, a.seconds, 3, a.before) if a.before else None
    cond_random = conditional(work, f200, a.seconds, 3)
    counts = (200, 2000, 10000)
    now_rows = per_flag(work, load.BIN, counts, a.seconds, "now")
    before_rows = per_flag(work, a.before, counts, a.seconds, "before") if a.before else None
    memory = memo_memory(work, f200)
    if not a.no_write:
        write((cond, cond_random, cond_before), now_rows, before_rows, memory, a.seconds)


if __name__ == "__main__":
    main()
