#!/usr/bin/env python3
"""The fleet on Redis Sentinel and Redis Cluster, run by hand (not in CI):
`python3 benches/fleet_ha.py`.

Starts, with real `redis-server` processes on core 1: one server (single); a primary, a replica
and three Sentinels (`down-after-milliseconds 1000`); a six-node cluster (`redis-cli --cluster
create`, `cluster-node-timeout 1000`). For each shape, release binaries of flagpost in edge mode
(`refresh_interval = 1s`, `store.lease = 2s`, `store.timeout = 500ms`, pinned to core 0) and the
scripted upstream of benches/fleet.py. Measures:

1. upstream requests per minute with 1, 3 and 5 instances (a window of --seconds each, scaled to
   a minute): flat in N when the fleet works;
2. for Sentinel and Cluster, a failover under traffic: three instances, each asked for
   `/api/client/features` every 20 ms, the node holding the fleet's keys killed; seconds until
   one poller again (exactly one instance polls, the others follow), requests failed, seconds
   until a change made upstream after the kill is served by every instance.

Writes the section "## Fleet on Sentinel and Cluster" of benches/RESULTS.md.
Options: --seconds 30, --no-write.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleet  # noqa: E402
import load  # noqa: E402

SECTION = "## Fleet on Sentinel and Cluster"
LEASE, TIMEOUT = "2s", "500ms"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def cluster_port():
    """A free port whose cluster bus port (the port + 10000) is a port too, and free."""
    while True:
        port = fleet.free_port()
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue


class Node:
    """A redis-server (data node or Sentinel) on core 1, in its own folder."""

    def __init__(self, args, sentinel_of=None):
        self.dir = tempfile.mkdtemp(prefix="flagpost-ha-")
        self.port = cluster_port() if "--cluster-enabled" in args else fleet.free_port()
        if sentinel_of:
            conf = os.path.join(self.dir, "sentinel.conf")
            with open(conf, "w") as f:
                f.write(f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
                        f"sentinel monitor fleetmaster 127.0.0.1 {sentinel_of} 2\n"
                        "sentinel down-after-milliseconds fleetmaster 1000\n"
                        "sentinel failover-timeout fleetmaster 5000\n")
            cmd = ["redis-server", conf, "--sentinel"]
        else:
            cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", self.dir] + args
        self.p = subprocess.Popen(["taskset", "-c", "1"] + cmd, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        self.wait(lambda: self.query("PING") == "PONG")

    def query(self, *args):
        out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args],
                             capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else None

    @staticmethod
    def wait(check, seconds=30):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.05)
        raise RuntimeError("timed out waiting")

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()

    def close(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Topology:
    def __init__(self, shape):
        self.shape = shape
        self.nodes = []
        if shape == "single":
            self.nodes = [Node([])]
            self.store = f'redis_url = "redis://127.0.0.1:{self.nodes[0].port}"'
            self.holder = self.nodes[0]
        elif shape == "sentinel":
            primary = Node([])
            replica = Node(["--replicaof", "127.0.0.1", str(primary.port)])
            Node.wait(lambda: "master_link_status:up" in (replica.query("INFO", "replication") or ""))
            sentinels = [Node([], sentinel_of=primary.port) for _ in range(3)]
            Node.wait(lambda: all("num-other-sentinels\n2" in (s.query("SENTINEL", "MASTER", "fleetmaster") or "")
                                  and "num-slaves\n1" in (s.query("SENTINEL", "MASTER", "fleetmaster") or "")
                                  for s in sentinels))
            self.nodes = [primary, replica] + sentinels
            urls = ",".join(f"redis://127.0.0.1:{s.port}" for s in sentinels)
            self.store = f'redis_url = "{urls}"\nmode = "sentinel"\nsentinel_master = "fleetmaster"'
            self.holder = primary
        else:
            self.nodes = [Node(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                "--cluster-node-timeout", "1000"]) for _ in range(6)]
            subprocess.run(["redis-cli", "--cluster", "create",
                            *[f"127.0.0.1:{n.port}" for n in self.nodes],
                            "--cluster-replicas", "1", "--cluster-yes"],
                           capture_output=True, check=True)
            Node.wait(lambda: all("cluster_state:ok" in (n.query("CLUSTER", "INFO") or "")
                                  for n in self.nodes))
            Node.wait(lambda: all(("role:master" in i or "master_link_status:up" in i)
                                  for i in (n.query("INFO", "replication") or "" for n in self.nodes)))
            urls = ",".join(f"redis://127.0.0.1:{n.port}" for n in self.nodes)
            self.store = f'redis_url = "{urls}"\nmode = "cluster"'
            self.holder = None

    def holder_of(self, namespace):
        """The data node holding the fleet's keys."""
        if self.shape != "cluster":
            return self.holder
        slot = int(self.nodes[0].query("CLUSTER", "KEYSLOT", f"flagpost:{{{namespace}}}:lease"))
        for n in self.nodes:
            for line in (n.query("CLUSTER", "NODES") or "").splitlines():
                f = line.split()
                if "myself" in f[2] and "master" in f[2]:
                    for r in f[8:]:
                        a, _, b = r.partition("-")
                        if a.isdigit() and int(a) <= slot <= int(b or a):
                            return n
        raise RuntimeError("no master holds the slot")

    def close(self):
        for n in self.nodes:
            n.close()


def config(work, port, name, topo, namespace):
    path = os.path.join(work, f"{name}.toml")
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
upstream_url = "http://127.0.0.1:{fleet.UPSTREAM_PORT}"
tokens = ["{fleet.TOKEN}"]
refresh_interval = "1s"
[store]
{topo.store}
namespace = "{namespace}"
lease = "{LEASE}"
timeout = "{TIMEOUT}"
""")
    return path


def start(work, i, topo, namespace):
    port = fleet.BASE_PORT + i
    return load.start([load.BIN, "--config", config(work, port, f"{namespace}-{i}", topo, namespace)],
                      port)[0]


def per_minute(work, up, topo, n, seconds):
    namespace = f"{topo.shape}-{n}"
    procs = [start(work, i, topo, namespace) for i in range(n)]
    try:
        time.sleep(4)
        up.take_counts()
        time.sleep(seconds)
        counts = up.take_counts()
    finally:
        for p in procs:
            load.stop(p)
    per_min = {k: v * 60 / seconds for k, v in counts.items()}
    log(f"{topo.shape}, {n} instances: " + ", ".join(f"{k} {v:.0f}/min" for k, v in sorted(per_min.items())))
    return per_min


def metrics(port):
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
    except OSError:
        return ""


def role(port):
    text = metrics(port)
    for r in ("poller", "follower", "solo"):
        if f'flagpost_fleet_role{{role="{r}"}} 1' in text:
            return r
    return None


def store_calls(ports, outcomes):
    """Store calls with these outcomes, summed over the instances."""
    total = 0.0
    for port in ports:
        for line in metrics(port).splitlines():
            if line.startswith("flagpost_store_operations_total{") and any(
                    f'outcome="{o}"' in line for o in outcomes):
                total += float(line.rsplit(" ", 1)[1])
    return total


def failover(work, up, topo):
    namespace = f"{topo.shape}-failover"
    procs = [start(work, i, topo, namespace) for i in range(3)]
    ports = [fleet.BASE_PORT + i for i in range(3)]
    sent, failed, stop = [0], [0], threading.Event()

    def hammer(port):
        while not stop.is_set():
            req = urllib.request.Request(f"http://127.0.0.1:{port}/api/client/features",
                                         headers={"Authorization": fleet.TOKEN})
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    r.read()
            except OSError:  # an HTTP error status, a refused or broken connection, a timeout
                failed[0] += 1
            sent[0] += 1
            time.sleep(0.02)

    try:
        Node.wait(lambda: sorted(role(p) or "" for p in ports) == ["follower", "follower", "poller"])
        threads = [threading.Thread(target=hammer, args=(p,), daemon=True) for p in ports]
        for t in threads:
            t.start()
        time.sleep(1)
        holder = topo.holder_of(namespace)
        t0 = time.monotonic()
        holder.kill()
        # The failure seen (a store call fails), then one poller again with Redis answering
        # lease calls: "ok" store calls grow again while the roles are one poller, two followers.
        failing = store_calls(ports, ("error", "timeout"))
        Node.wait(lambda: store_calls(ports, ("error", "timeout")) > failing, 60)
        ok = store_calls(ports, ("ok",))
        Node.wait(lambda: sorted(role(p) or "" for p in ports) == ["follower", "follower", "poller"]
                  and store_calls(ports, ("ok",)) >= ok + 6, 60)
        repolled = time.monotonic() - t0
        flag, value = up.toggle()
        Node.wait(lambda: all(fleet.served_enabled(p, flag) == value for p in ports), 60)
        reached = time.monotonic() - t0
        stop.set()
        for t in threads:
            t.join()
    finally:
        stop.set()
        for p in procs:
            load.stop(p)
    log(f"{topo.shape} failover: one poller again {repolled:.2f} s, change everywhere {reached:.2f} s, "
        f"{failed[0]} of {sent[0]} requests failed")
    return repolled, reached, failed[0], sent[0]



def write(rates, failovers, seconds):
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    paths = sorted({k for r in rates.values() for k in r})
    s = [SECTION, "",
         f"Written by `python3 benches/fleet_ha.py` on {when}. Machine: {load.machine()}. Release",
         "binaries in edge mode (`refresh_interval = 1s`, 200 flags, one startup token,",
         f"`store.lease = {LEASE}`, `store.timeout = {TIMEOUT}`) pinned to core 0; `redis-server`",
         "processes (Sentinels with `down-after-milliseconds 1000`, cluster nodes with",
         "`cluster-node-timeout 1000`) and the scripted upstream on core 1.", "",
         f"Upstream requests per minute, by path (a {seconds} s window scaled to a minute):", "",
         "| Redis | instances | " + " | ".join(f"`{p}`" for p in paths) + " |",
         "|---|---|" + "---|" * len(paths)]
    for (shape, n), counts in rates.items():
        s.append(f"| {shape} | {n} | " + " | ".join(f"{counts.get(p, 0):.0f}" for p in paths) + " |")
    s += ["", "Failover under traffic (three instances, each asked every 20 ms; the node holding the",
          "fleet's keys killed; a flag changed upstream once one poller is back):", "",
          "| Redis | one poller again | change on every instance | requests failed |",
          "|---|---|---|---|"]
    for shape, (repolled, reached, failed, sent) in failovers.items():
        s.append(f"| {shape} | {repolled:.2f} s | {reached:.2f} s | {failed} of {sent} |")
    s += ["", "\"One poller again\" counts from the kill and includes Redis's own failover; it is",
          "measured by polling `/metrics` every 50 ms.", ""]
    load.write_section(SECTION, s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    os.sched_setaffinity(0, {1})
    log("building the release binary")
    subprocess.run(["cargo", "build", "--release", "--bin", "flagpost"], cwd=load.ROOT, check=True)
    work = tempfile.mkdtemp(prefix="flagpost-fleet-ha-")
    features = os.path.join(work, "features.json")
    load.gen(200, features)
    with open(features, "rb") as f:
        up = fleet.Upstream(fleet.UPSTREAM_PORT, f.read())
    rates, failovers = {}, {}
    try:
        for shape in ("single", "sentinel", "cluster"):
            topo = Topology(shape)
            try:
                for n in (1, 3, 5):
                    rates[(shape, n)] = per_minute(work, up, topo, n, a.seconds)
                if shape != "single":
                    failovers[shape] = failover(work, up, topo)
            finally:
                topo.close()
    finally:
        up.close()
    if not a.no_write:
        write(rates, failovers, a.seconds)


if __name__ == "__main__":
    main()
