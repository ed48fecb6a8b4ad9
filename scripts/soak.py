#!/usr/bin/env python3
"""scripts/soak.py: load and faults against the real binary and the real engine.

N clients (default 20) for a bounded time (default 10 minutes) run a mix of create,
exec, read, stream and destroy over at most 40 sandboxes; meanwhile the server is
killed with SIGKILL at random moments (default 10 times) and restarted on the same
data, and dockerd is restarted once (with live-restore, by scripts/setup-docker.sh).
It prints what it saw and exits non-zero when a promise broke:

- a 5xx answer (connection errors while the server is down are expected and
  counted apart);
- a sandbox the clients created that the server lost after a restart (its id 404s
  while its container still exists), or a container left behind at the end;
- repobox's RSS growing (printed: start, end and peak of each server process).

Only loopback traffic: the server, and a git server of its own on 127.0.0.1.
Usage: scripts/soak.py [--clients 20] [--minutes 10] [--kills 10] [--no-engine-restart]
"""

import argparse
import http.client
import http.server
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_SANDBOXES = 40


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_repo(root):
    src = os.path.join(root, "src")
    env = dict(os.environ, GIT_AUTHOR_NAME="soak", GIT_AUTHOR_EMAIL="soak@example.com",
               GIT_COMMITTER_NAME="soak", GIT_COMMITTER_EMAIL="soak@example.com")
    subprocess.run(["git", "init", "-q", "-b", "trunk", src], check=True)
    with open(os.path.join(src, "README"), "w") as f:
        f.write("soak\n" * 100)
    subprocess.run(["git", "-C", src, "add", "README"], check=True, env=env)
    subprocess.run(["git", "-C", src, "commit", "-qm", "soak"], check=True, env=env)
    served = os.path.join(root, "srv")
    subprocess.run(["git", "clone", "-q", "--bare", src, os.path.join(served, "soak.git")], check=True)
    subprocess.run(["git", "-C", os.path.join(served, "soak.git"), "update-server-info"], check=True)
    return served


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve_git(directory):
    handler = lambda *a, **k: QuietHandler(*a, directory=directory, **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Server:
    """The repobox binary on fixed data; killed and restarted on demand."""

    def __init__(self, binary, root, port):
        self.binary, self.root, self.port = binary, root, port
        self.proc = None
        self.rss = []  # (start, end, peak) MiB per process

    def start(self, **extra_env):
        env = dict(os.environ, HOST="127.0.0.1", PORT=str(self.port),
                   DATA_DIR=os.path.join(self.root, "data"), CACHE_DIR=os.path.join(self.root, "cache"),
                   ALLOWED_GIT_HOSTS="127.0.0.1", MAX_CONTAINERS="60", LOG_LEVEL="warn", **extra_env)
        log = open(os.path.join(self.root, "server.log"), "a")
        self.proc = subprocess.Popen([self.binary, "serve"], env=env, stdout=log, stderr=log)
        self.started_rss = None
        self.peak = 0.0
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/health/ready", timeout=2)
                self.started_rss = self.rss_now()
                return
            except Exception:
                time.sleep(0.1)
        raise SystemExit("soak: the server did not become ready")

    def rss_now(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def sample(self):
        self.peak = max(self.peak, self.rss_now())

    def kill9(self):
        end = self.rss_now()
        self.rss.append((self.started_rss or 0.0, end, max(self.peak, end)))
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.server_errors = []
        self.created = set()
        self.destroyed = set()
        # A destroy was sent (its answer may have been lost with a killed server).
        self.destroying = set()
        # While the engine restarts, 503 "Docker unavailable" is the right answer.
        self.engine_down = False
        self.unavailable = 0

    def count(self, what):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1


def call(base, method, path, body=None, timeout=60, raw=False):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = resp.read()
            return resp.status, payload if raw else (json.loads(payload) if payload else None)
    except urllib.error.HTTPError as err:
        payload = err.read()
        try:
            return err.code, json.loads(payload)
        except ValueError:
            return err.code, payload
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError,
            socket.timeout, OSError):
        return None, None  # the server is down (killed on purpose) or restarting


def client(base, url, stats, stop, rng):
    mine = []
    while not stop.is_set():
        op = rng.choice(["create", "exec", "exec", "exec", "read", "stream", "destroy"])
        if op == "create" or not mine:
            with stats.lock:
                live = len(stats.created - stats.destroyed)
            if live >= MAX_SANDBOXES:
                op = "destroy" if mine else "exec"
                if not mine:
                    time.sleep(0.2)
                    continue
            else:
                status, body = call(base, "POST", "/api/v1/containers",
                                    {"repo_url": url, "max_runtime_secs": 3600})
                record(stats, "create", status, body)
                if status == 201:
                    with stats.lock:
                        stats.created.add(body["container_id"])
                    mine.append(body["container_id"])
                continue
        sid = rng.choice(mine)
        if op == "exec":
            status, body = call(base, "POST", f"/api/v1/containers/{sid}/execute",
                                {"command": "git rev-parse HEAD; echo x > /tmp/f; cat /tmp/f", "timeout_secs": 30})
        elif op == "read":
            status, body = call(base, "GET", f"/api/v1/containers/{sid}/files?file_path=/workspace/README")
        elif op == "stream":
            status, body = call(base, "POST", f"/api/v1/containers/{sid}/execute/stream",
                                {"command": "head -c 2000000 /dev/zero | tr '\\0' y"}, raw=True)
        else:
            with stats.lock:
                stats.destroying.add(sid)
            status, body = call(base, "DELETE", f"/api/v1/containers/{sid}")
            if status in (204, 404):
                mine.remove(sid)
                with stats.lock:
                    stats.destroyed.add(sid)
        record(stats, op, status, body)


def record(stats, op, status, body):
    if status is None:
        stats.count("down")
        return
    stats.count(f"{op} {status}")
    if status == 503 and isinstance(body, dict) and body.get("code") == "docker_unavailable" and stats.engine_down:
        stats.unavailable += 1
        return
    if status >= 500:
        with stats.lock:
            stats.server_errors.append((op, status, str(body)[:300]))


def containers(instance):
    out = subprocess.run(["docker", "ps", "-aq", "--filter", "label=repobox.managed=true",
                          "--filter", f"label=repobox.instance={instance}"],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.split() if line]


def describe(cid):
    out = subprocess.run(["docker", "inspect", "--format",
                          "{{.Name}} {{.State.Status}} created {{.Created}} pool={{index .Config.Labels \"repobox.pool\"}}", cid],
                         capture_output=True, text=True).stdout.strip()
    return out or cid


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--no-engine-restart", action="store_true")
    args = parser.parse_args()

    binary = os.path.join(ROOT, "target", "release", "repobox")
    if not os.path.exists(binary):
        subprocess.run(["cargo", "build", "--quiet", "--release", "--locked", "--bin", "repobox"], cwd=ROOT, check=True)
    root = tempfile.mkdtemp(prefix="repobox-soak-")
    git = serve_git(make_repo(root))
    url = f"http://127.0.0.1:{git.server_address[1]}/soak.git"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = Server(binary, root, port)
    server.start()
    with open(os.path.join(root, "data", "instance-id")) as f:
        instance = f.read().strip()

    stats, stop = Stats(), threading.Event()
    rng = random.Random(1)
    threads = [threading.Thread(target=client, args=(base, url, stats, stop, random.Random(i)), daemon=True)
               for i in range(args.clients)]
    for t in threads:
        t.start()
    duration = args.minutes * 60
    began = time.time()
    kill_at = sorted(rng.uniform(0.05, 0.9) * duration for _ in range(args.kills))
    engine_at = None if args.no_engine_restart else rng.uniform(0.3, 0.7) * duration
    lost = []
    restarts = 0
    while time.time() - began < duration:
        time.sleep(0.2)
        server.sample()
        elapsed = time.time() - began
        if kill_at and elapsed >= kill_at[0]:
            kill_at.pop(0)
            server.kill9()
            server.start()
            restarts += 1
            # Every sandbox the clients hold must still be there.
            with stats.lock:
                held = list(stats.created - stats.destroying)
            for sid in held:
                status, _ = call(base, "GET", f"/api/v1/containers/{sid}")
                if status == 404:
                    with stats.lock:
                        if sid not in stats.destroying:
                            lost.append(sid)
        if engine_at is not None and elapsed >= engine_at:
            engine_at = None
            pid = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True).stdout.split()
            if pid:
                stats.engine_down = True
                os.kill(int(pid[0]), signal.SIGTERM)
                while os.path.exists(f"/proc/{pid[0]}"):
                    time.sleep(0.1)
                subprocess.run(["bash", os.path.join(ROOT, "scripts", "setup-docker.sh")],
                               check=True, stdout=subprocess.DEVNULL)
                stats.count("engine restarted")
                # Answers already on their way may still say so for a moment.
                threading.Timer(10.0, lambda: setattr(stats, "engine_down", False)).start()
    stop.set()
    for t in threads:
        t.join(timeout=120)
    # Clean up through the API, then look for leftovers.
    status, listing = call(base, "GET", "/api/v1/containers")
    for sandbox in (listing or {}).get("containers", []):
        call(base, "DELETE", f"/api/v1/containers/{sandbox['container_id']}")
    time.sleep(1)
    # The warm pool's members outlive their server by design (the next start removes
    # them): one more start, with the pool off, lets reconciliation (and its late
    # sweep) clear what the last process left, and what is still there then leaked.
    server.kill9()
    server.start(POOL_SIZE="0")
    deadline = time.time() + 30
    while containers(instance) and time.time() < deadline:
        time.sleep(0.5)
    leaked = containers(instance)
    leaked_info = [describe(cid) for cid in leaked]
    server.kill9()
    git.shutdown()

    print("soak: %d clients, %.1f min, %d kill -9 restarts, engine restart: %s" % (
        args.clients, args.minutes, restarts, "yes" if stats.counts.get("engine restarted") else "no"))
    for key in sorted(stats.counts):
        print(f"  {key}: {stats.counts[key]}")
    for n, (start, end, peak) in enumerate(server.rss):
        print(f"  server process {n}: RSS start {start:.1f} MiB, end {end:.1f} MiB, peak {peak:.1f} MiB")
    print(f"  503 Docker unavailable while the engine restarted (expected): {stats.unavailable}")
    print(f"  other 5xx answers: {len(stats.server_errors)}")
    for op, status, body in stats.server_errors[:10]:
        print(f"    {op} {status}: {body}")
    print(f"  sandboxes lost across restarts: {len(lost)} {lost[:5]}")
    print(f"  containers left at the end: {len(leaked)}")
    for cid, info in zip(leaked, leaked_info):
        print(f"    {info}")
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)
    ok = not stats.server_errors and not lost and not leaked
    print("soak: ok" if ok else "soak: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
