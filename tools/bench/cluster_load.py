"""cluster_load.py - multi-turn image conversations against a llava-server
cluster (scripts/cluster.sh), for its test (tests/cluster/test_cluster.py)
and its benchmark (tools/bench/cluster_bench.py).

A conversation is an image and a question, then follow-up questions; every
turn sends the whole conversation so far, as chat clients do. Clients (one
thread each, one kept-alive connection each) take conversations from a
shared list and wait think_s between turns. Every request is recorded: when
it began and ended, its status, the replica that answered (X-Replica-Id),
its cached prompt tokens, or its error. The client never retries: a failure
is counted as the user would see it.

Also: Cluster, which starts and stops scripts/cluster.sh in a directory of
its own on free ports, and reads the balancer's view of each replica.

Python 3 standard library only.
"""

import base64
import csv
import http.client
import io
import json
import os
import random
import socket
import subprocess
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CLUSTER_SH = os.path.join(ROOT, "scripts", "cluster.sh")

QUESTIONS = [
    "What shapes are in this image?",
    "Describe the image.",
    "Which colours do you see?",
    "What is the background colour?",
    "How many shapes are there?",
]
FOLLOW_UPS = [
    "And what colour is the background?",
    "Which shape is the largest?",
    "Is there a circle?",
    "Describe it again, briefly.",
    "What else is there?",
]


def free_ports(n):
    """n distinct free TCP ports on loopback (bound, read, released)."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def consecutive_free_ports(n, tries=200):
    """A run of n consecutive free ports (replicas listen on base..base+n-1)."""
    rng = random.Random(os.getpid() ^ int(time.time()))
    for _ in range(tries):
        base = rng.randrange(20000, 60000 - n)
        ok = True
        for p in range(base, base + n):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                ok = False
            finally:
                s.close()
            if not ok:
                break
        if ok:
            return base
    raise RuntimeError("no run of %d free ports" % n)


def http_get(port, path, timeout=5):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


class Cluster:
    """N replicas and the balancer through scripts/cluster.sh, in dir."""

    def __init__(self, n, dir, model=None, server=None, drain_grace=2, check_inter="300ms",
                 check_fall=2, check_rise=2, server_args="", round_robin=False):
        self.n, self.dir = n, dir
        self.lb_port, self.stats_port, rr = free_ports(3)
        self.rr_port = rr if round_robin else None
        self.replica_port = consecutive_free_ports(n)
        self.env = dict(os.environ)
        self.env.update({
            "CLUSTER_DIR": dir,
            "LB_PORT": str(self.lb_port),
            "STATS_PORT": str(self.stats_port),
            "REPLICA_PORT": str(self.replica_port),
            "RR_PORT": str(self.rr_port or ""),
            "DRAIN_GRACE": str(drain_grace),
            "CHECK_INTER": check_inter,
            "CHECK_FALL": str(check_fall),
            "CHECK_RISE": str(check_rise),
            "SERVER_ARGS": server_args,
        })
        if model:
            self.env["MODEL"] = model
        if server:
            self.env["LLAVA_SERVER"] = server

    def sh(self, *args, timeout=180):
        p = subprocess.run([CLUSTER_SH] + list(args), env=self.env, capture_output=True,
                           text=True, timeout=timeout)
        if p.returncode:
            raise RuntimeError("cluster.sh %s: exit %d\n%s%s" % (" ".join(args), p.returncode,
                                                                 p.stdout, p.stderr))
        return p.stdout

    def start(self):
        return self.sh("start", str(self.n))

    def stop(self):
        return self.sh("stop", timeout=300)

    def pid(self, i):
        """Replica i's pid (1-based), or None."""
        try:
            with open(os.path.join(self.dir, "r%d.pid" % i)) as f:
                return int(f.read())
        except (OSError, ValueError):
            return None

    def pids(self):
        out = [self.pid(i) for i in range(1, self.n + 1)]
        try:
            with open(os.path.join(self.dir, "haproxy.pid")) as f:
                out.append(int(f.read()))
        except (OSError, ValueError):
            pass
        return [p for p in out if p]

    def states(self, backend="llava_affinity"):
        """{server name: HAProxy's status ("UP", "DOWN", "UP 1/2", ...)}."""
        status, body = http_get(self.stats_port, "/stats;csv")
        if status != 200:
            return {}
        rows = csv.DictReader(io.StringIO(body.decode().lstrip("# ")))
        return {r["svname"]: r["status"] for r in rows
                if r["pxname"] == backend and r["svname"] not in ("FRONTEND", "BACKEND")}

    def wait_state(self, name, want, timeout=30):
        """Until the balancer says replica name is want ("UP"/"DOWN"); the time."""
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.states().get(name, "") == want:
                return time.time()
            time.sleep(0.02)
        raise RuntimeError("%s not %s after %d s: %s" % (name, want, timeout, self.states()))

    def log(self, name):
        with open(os.path.join(self.dir, name), errors="replace") as f:
            return f.read()


def load_images(paths):
    return ["data:image/png;base64," + base64.b64encode(open(p, "rb").read()).decode()
            for p in paths]


def make_conversations(n, images, turns=3, seed=1, max_tokens=24):
    """n conversations: (image data URL, [question per turn], max_tokens)."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        qs = [rng.choice(QUESTIONS)] + [rng.choice(FOLLOW_UPS) for _ in range(turns - 1)]
        out.append({"id": k, "image": images[k % len(images)], "questions": qs,
                    "max_tokens": max_tokens})
    return out


class Record:
    __slots__ = ("conv", "turn", "t0", "t1", "status", "replica", "cached", "prompt",
                 "completion", "error", "port")

    def __init__(self, conv, turn):
        self.conv, self.turn = conv, turn
        self.t0 = self.t1 = 0.0
        self.status, self.replica, self.cached = 0, None, 0
        self.prompt = self.completion = 0
        self.error = None
        self.port = 0  # the client's port: the balancer's log line shows it

    @property
    def ok(self):
        return self.status == 200 and self.error is None


def _post(conn_box, port, body, timeout, rec):
    """POST /v1/chat/completions on the kept-alive connection in conn_box[0]
    (made anew if closed): (status, headers, body bytes)."""
    if conn_box[0] is None:
        conn_box[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c = conn_box[0]
    try:
        c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        rec.port = c.sock.getsockname()[1] if c.sock else 0
        r = c.getresponse()
        data = r.read()
        if r.getheader("Connection", "").lower() == "close":
            c.close()
            conn_box[0] = None
        return r.status, r, data
    except Exception:
        c.close()
        conn_box[0] = None
        raise


def run(port, conversations, clients=16, think_s=0.2, timeout=120, on_done=None, seed=7):
    """Plays the conversations through the balancer at port; returns the
    records (every request) in the order they ended. on_done(n) is called
    after each conversation ends with the number ended so far."""
    lock = threading.Lock()
    records, todo = [], list(conversations)
    ended = [0]

    def client(ci):
        rng = random.Random(seed * 1000 + ci)
        box = [None]
        while True:
            with lock:
                if not todo:
                    break
                conv = todo.pop(0)
            msgs = []
            for turn, q in enumerate(conv["questions"]):
                if turn == 0:
                    content = [{"type": "image_url", "image_url": {"url": conv["image"]}},
                               {"type": "text", "text": q}]
                else:
                    content = q
                msgs.append({"role": "user", "content": content})
                body = json.dumps({"model": "llava", "messages": msgs,
                                   "max_tokens": conv["max_tokens"], "temperature": 0})
                rec = Record(conv["id"], turn)
                rec.t0 = time.time()
                answer = None
                try:
                    status, resp, data = _post(box, port, body, timeout, rec)
                    rec.status = status
                    rec.replica = resp.getheader("X-Replica-Id")
                    if status == 200:
                        j = json.loads(data)
                        u = j.get("usage", {})
                        rec.prompt = u.get("prompt_tokens", 0)
                        rec.completion = u.get("completion_tokens", 0)
                        rec.cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
                        answer = j["choices"][0]["message"]["content"]
                    else:
                        rec.error = data[:300].decode(errors="replace")
                except Exception as e:  # noqa: BLE001 - every failure is a record
                    rec.error = "%s: %s" % (type(e).__name__, e)
                rec.t1 = time.time()
                with lock:
                    records.append(rec)
                if answer is None:
                    break  # the user saw an error: the conversation ends there
                msgs.append({"role": "assistant", "content": answer})
                if turn + 1 < len(conv["questions"]) and think_s > 0:
                    time.sleep(think_s * (0.5 + rng.random()))
            with lock:
                ended[0] += 1
                n = ended[0]
            if on_done:
                on_done(n)
        if box[0] is not None:
            box[0].close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records


def affinity(records):
    """(same, total, cached): of turns 2+ answered, how many landed on the
    replica that answered their conversation's turn 1, and how many of all
    turns 2+ had cached prompt tokens."""
    first = {r.conv: r.replica for r in records if r.turn == 0 and r.ok}
    later = [r for r in records if r.turn > 0 and r.ok and r.conv in first]
    same = sum(1 for r in later if r.replica == first[r.conv])
    cached = sum(1 for r in later if r.cached > 0)
    return same, len(later), cached


def percentile(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def running(pid):
    """Whether pid runs (a zombie does not: an orphan nobody reaps stays one)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def refused(port):
    """Whether nothing listens on 127.0.0.1:port any more (the connection is
    refused). A killed process's listener outlives its /proc "zombie" state
    while its other threads are still tearing down (slow under ASan)."""
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect(("127.0.0.1", port))
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        s.close()


def kill(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


__all__ = ["Cluster", "Record", "affinity", "free_ports", "kill", "load_images", "refused", "running",
           "make_conversations", "percentile", "run"]
