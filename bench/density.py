#!/usr/bin/python3
"""Density: the resident memory (RSS, from /proc) of one node
  1. idle, with nothing deployed;
  2. with 10,000 deployed JavaScript functions (--deployments deployments of
     --functions functions each), every deployment called once on each
     executor thread, then left idle past --idle-window so that only each
     deployment's warm instance is left;
  3. with --warm deployments of one JavaScript function each on a node with
     one executor thread, every one called: one warm instance each; the
     figure per instance is (RSS - idle RSS) / instances.
  4. with --many deployments of one JavaScript function each, every one
     called, on a node with --memory-budget --budget: the least recently used
     instances are destroyed to stay under it, and RSS is what the
     deployments themselves cost plus the budget.
Targets: (2) under 1 GiB, (3) under 200 KB per warm instance.

usage: bench/density.py [--deployments 100] [--functions 100] [--warm 1000]
                        [--many 2000] [--budget 64MB]
"""
import argparse
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("FNMESH_BIN", os.path.join(ROOT, "build", "fnmesh"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bundle(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Node:
    def __init__(self, *args):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="fnmesh-density-")
        env = dict(os.environ, FNMESH_ADMIN_TOKEN="bench")
        self.proc = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:%d" % self.port,
                                      "--data", self.dir, "--log-level", "warn"] + list(args),
                                     env=env, stderr=open(os.path.join(self.dir, "log"), "w"))
        self.conn = None
        for _ in range(200):
            try:
                if self.req("GET", "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit("node did not start")

    def req(self, method, path, body=None, headers=None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        h = {"Authorization": "Bearer bench"}
        h.update(headers or {})
        try:
            self.conn.request(method, path, body=body, headers=h)
            r = self.conn.getresponse()
            return r.status, r.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise

    def deploy(self, name, files):
        st, body = self.req("PUT", "/system/v1/deployments/" + name, bundle(files),
                            {"Content-Type": "application/gzip"})
        if st not in (200, 201):
            raise SystemExit("deploy %s: %s %s" % (name, st, body[:300]))

    def call(self, dep, fn):
        st, body = self.req("POST", "/fn/%s/%s" % (dep, fn), b"[1]",
                            {"Content-Type": "application/json"})
        if st != 200:
            raise SystemExit("call %s/%s: %s %s" % (dep, fn, st, body[:300]))

    def rss_mib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        return 0.0

    def instances(self):
        st, body = self.req("GET", "/metrics")
        n = 0
        for line in body.decode().splitlines():
            if line.startswith("fnmesh_function_instances{"):
                n += int(float(line.split()[-1]))
        return n

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        subprocess.run(["rm", "-rf", self.dir])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--deployments", type=int, default=100)
    ap.add_argument("--functions", type=int, default=100)
    ap.add_argument("--warm", type=int, default=1000)
    ap.add_argument("--many", type=int, default=2000)
    ap.add_argument("--budget", default="64MB")
    a = ap.parse_args()

    # 1 + 2: many functions, mostly idle
    node = Node("--threads", "2", "--idle-window", "1s")
    idle = node.rss_mib()
    src = "\n".join("export function f%d(x) { return x + %d; }" % (i, i)
                    for i in range(a.functions)) + "\n"
    t0 = time.monotonic()
    for d in range(a.deployments):
        node.deploy("d%d" % d, {"index.js": src})
    took = time.monotonic() - t0
    for d in range(a.deployments):  # both threads: two calls each
        node.call("d%d" % d, "f0")
        node.call("d%d" % d, "f1")
    busy = node.rss_mib()
    inst_busy = node.instances() // max(1, a.functions)
    time.sleep(2.5)  # past the idle window: the warm instance of each is left
    node.call("d0", "f0")
    time.sleep(1.2)
    quiet = node.rss_mib()
    inst_quiet = node.instances() // max(1, a.functions)
    node.stop()

    # 3: warm instances, one thread
    node = Node("--threads", "1")
    base = node.rss_mib()
    one = "export function hi(x) { return x; }\n"
    for d in range(a.warm):
        node.deploy("w%d" % d, {"index.js": one})
        node.call("w%d" % d, "hi")
    warm = node.rss_mib()
    inst = node.instances()
    node.stop()

    # 4: many deployments under a memory budget
    node = Node("--threads", "1", "--memory-budget", a.budget)
    mbase = node.rss_mib()
    for d in range(a.many):
        node.deploy("m%d" % d, {"index.js": one})
        node.call("m%d" % d, "hi")
    many = node.rss_mib()
    minst = node.instances()
    node.stop()

    total = a.deployments * a.functions
    print("node idle, nothing deployed:                  %8.1f MiB" % idle)
    print("%6d JS functions (%d deployments x %d), %d instances after calls: %8.1f MiB"
          % (total, a.deployments, a.functions, inst_busy, busy))
    print("%6d JS functions, idle past the window, %d instances left:     %8.1f MiB  (target < 1024)"
          % (total, inst_quiet, quiet))
    print("deploying them took %.1f s (%.1f ms each)" % (took, took * 1000 / a.deployments))
    print("%6d warm JS instances (one per deployment, 1 thread):          %8.1f MiB  = %.0f KB each"
          " over the idle node (target < 200)" % (inst, warm, (warm - base) * 1024 / max(1, inst)))
    print("%6d deployments of one JS function, --memory-budget %s, %d instances left: %8.1f MiB"
          " = %.0f KB per deployment over the idle node" % (a.many, a.budget, minst, many,
                                                           (many - mbase) * 1024 / max(1, a.many)))


if __name__ == "__main__":
    main()
