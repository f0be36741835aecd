#!/usr/bin/env python3
"""soak.py - a bounded soak of llava-server on loopback: starts the server,
drives --duration seconds of mixed multi-turn chat traffic from --clients
threads, and reports whether it stays up, what it refuses, how fast the first
token comes, how much of the prompts the prefix cache serves and whether its
resident memory grows. A tool, not a test; standard library only.

    python3 tools/bench/soak.py --duration 600 --clients 6            # the real soak
    python3 tools/bench/soak.py --duration 60 --warmup 15 --clients 4  # a quick one

The real soak is 600 s (the default) after a 60 s warm-up; shorter runs say
little about memory growth. The server is build/bin/llava-server (--server-bin)
on models/demo (--model), started as --port 0 --parallel 4 --threads <cores>
(--port, --parallel, --threads); its port is read from its "listening on"
line. Extra server flags go through verbatim, one per --server-arg, in the
--flag=value form: --server-arg=--no-prefix-cache. The clients run on the
same cores as the server: on a small machine they take part of its CPU.

Traffic: each client loops over conversations picked at random (--seed):
  image  1-4 turns about one models/demo/samples/*.png sent as a data: URL in
         an image_url part, the whole history resent every turn (the user
         messages with the image, the assistant's answers), as OpenAI clients do;
  text   1-3 text-only turns after one of two shared long system prompts;
  single one turn about an image, a question never asked before.
Most requests stream (stream_options.include_usage) and time the first token:
the first SSE chunk with non-empty choices[0].delta.content (the first chunk
with a delta where no content ever comes). max_tokens 8-32, temperature 0 or
0.7 with a seed. About 5% are bad on purpose (invalid JSON, an image_url that
is no image) and must get a 4xx. 429/503 count as refused: the client sleeps
Retry-After and sends the turn again.

Measures: requests ok / refused / failed (5xx other than 503, transport
errors, error events in a stream, answers that are no JSON) / bad input
rejected (a 4xx to a good request is shown as unexpected, not failed); time
to first token p50/p90/p99 of first turns and of follow-up turns; the share
of prompt tokens usage.prompt_tokens_details.cached_tokens says came from the
cache; the deltas of /metrics counters llava_prefix_cache_*
and llava_image_cache_* (what exists); the final /health "memory"; the
server's RSS from /proc/PID/statm every 100 ms: at the end of the warm-up,
final, max, the least-squares slope after the warm-up (MiB/min) and max-min
after the warm-up; /proc/loadavg at start and end. --json FILE writes every
number, every request and every RSS sample.

Exit status 0 when nothing failed (no transport failure, no 5xx other than
503, no bad request accepted) and the server still answered /health at the
end; 1 otherwise. The server is stopped with SIGTERM; its exit status is
reported.
"""
import argparse
import base64
import glob
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IMAGE_QUESTIONS = [
    "Describe the image.", "What shape is in the picture?", "Which color is the background?",
    "How many shapes are there?", "What is in the middle of the image?",
    "Is there anything red in the image?", "Describe the image in one sentence.",
]
FOLLOW_UPS = [
    "And what color is it?", "Say that again, shorter.", "Is it large or small?",
    "Where in the picture is it?", "Are you sure?", "What else do you see?",
    "Describe its edges.",
]
SINGLE_TEMPLATES = [
    "Question {n}: what do you see?", "In a few words, picture {n}: what is shown?",
    "Case {n}. Name the main shape.", "Request {n}: describe the colours.",
]
TEXT_QUESTIONS = [
    "What is a triangle?", "Name three colors.", "How many sides does a square have?",
    "What is the opposite of big?", "Count to five.", "What color is the sky?",
    "Say hello.", "What is a circle?",
]
SYSTEM_PROMPTS = [
    "You are a patient assistant for a small design studio. The studio works with simple "
    "geometric shapes (circles, squares, triangles, stars and crosses) in flat colours on plain "
    "backgrounds. Answer every question briefly and plainly, in one or two short sentences, "
    "without lists, headings or markdown. When a question is ambiguous, give the most likely "
    "reading and answer that one; never ask the user a question back. Prefer everyday words to "
    "technical terms, name colours by their common names, and do not guess at things you "
    "cannot know. Keep a friendly tone.",
    "You are the help desk of a museum of shapes and colours. Visitors ask short questions "
    "while walking through the rooms, on their phones, so your answers must be short: one "
    "sentence where one is enough, two at most. Never use bullet points or tables. If the "
    "visitor asks about a shape, say how many sides or points it has and one thing it is "
    "commonly used for. If the visitor asks about a colour, name one thing that usually has "
    "that colour. Be polite, do not apologise, and do not repeat the question in the answer.",
]
CLIENT_ERRORS = (OSError, http.client.HTTPException)  # socket.timeout is an OSError


def percentile(xs, p):
    """Linear interpolation between the closest ranks; None for no data."""
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def slope_per_minute(samples):
    """Least-squares slope of (t seconds, bytes) in MiB per minute."""
    n = len(samples)
    if n < 2:
        return None
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    den = sum((t - mt) ** 2 for t, _ in samples)
    if den == 0:
        return None
    num = sum((t - mt) * (v - mv) for t, v in samples)
    return num / den * 60 / 2**20


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except (OSError, ValueError):
        return None


def parse_metrics(text):
    """{series: value} and {name: type} of a Prometheus text exposition."""
    values, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                types[parts[2]] = parts[3]
            continue
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        try:
            values[series] = float(value)
        except ValueError:
            pass
    return values, types


class Server:
    """The llava-server process, its port and an RSS sampler thread."""

    def __init__(self, a):
        self.a = a
        self.log_path = a.server_log or tempfile.mktemp(prefix="soak-server-", suffix=".log")
        self.log = open(self.log_path, "wb")
        cmd = [a.server_bin, "--model", a.model, "--host", a.host, "--port", str(a.port),
               "--parallel", str(a.parallel)]
        if a.threads:
            cmd += ["--threads", str(a.threads)]
        cmd += a.server_arg
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.port = None
        self.samples = []  # (monotonic seconds, rss bytes)
        self.stop_sampling = threading.Event()
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()

    def _sample(self):
        path = f"/proc/{self.proc.pid}/statm"
        while not self.stop_sampling.is_set():
            try:
                with open(path) as f:
                    rss = int(f.read().split()[1]) * self.page
                if rss:  # a zombie reads 0: the process is gone
                    self.samples.append((time.monotonic(), rss))
            except (OSError, ValueError, IndexError):
                if self.proc.poll() is not None:
                    return
            self.stop_sampling.wait(0.1)

    def log_text(self, head=8, tail=12):
        """The server log's first and last lines."""
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        if len(lines) > head + tail:
            lines = lines[:head] + [f"  [... {len(lines) - head - tail} lines ...]"] + lines[-tail:]
        return "\n".join(lines)

    def wait_port(self, timeout):
        """The port from the "listening on HOST:PORT" line (port 0 picks one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return None
            try:
                with open(self.log_path, "rb") as f:
                    m = re.search(rb"listening on \S*:(\d+)", f.read())
                if m:
                    self.port = int(m.group(1))
                    return self.port
            except OSError:
                pass
            time.sleep(0.05)
        return None

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=30):
        """SIGTERM, then SIGKILL after timeout; returns (exit status, killed)."""
        killed = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                killed = True
        self.stop_sampling.set()
        self.sampler.join(2)
        self.log.close()
        return self.proc.returncode, killed


def http_get(host, port, path, timeout):
    """(status, body text) of a GET; raises on transport errors."""
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


def wait_health(host, port, timeout, server):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            return False
        try:
            if http_get(host, port, "/health", 5)[0] == 200:
                return True
        except CLIENT_ERRORS:
            pass
        time.sleep(0.1)
    return False


class Stats:
    """Every request's record, behind a lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.records = []
        self.errors = []  # first messages of failures, for the report

    def add(self, rec):
        with self.lock:
            self.records.append(rec)
            if rec["outcome"] in ("failed", "bad_accepted", "client_4xx") and len(self.errors) < 20:
                self.errors.append(f"{rec['kind']} turn {rec['turn']}: {rec.get('error')}")


class Client:
    """One thread's conversations until the deadline."""

    def __init__(self, idx, a, port, images, stats, deadline, stop):
        self.idx, self.a, self.port = idx, a, port
        self.images, self.stats = images, stats
        self.deadline, self.stop = deadline, stop
        self.rng = random.Random(a.seed * 1000003 + idx)
        self.n = 0

    def running(self):
        return not self.stop.is_set() and time.monotonic() < self.deadline

    def run(self):
        while self.running():
            kind = "?"
            try:
                r = self.rng.random()
                if r < self.a.bad_fraction:
                    kind = "bad"
                    self.bad_request()
                    continue
                kind = self.rng.choice(["image", "text", "single"])
                getattr(self, "conv_" + kind)()
            except Exception:  # a bug here must not end the run: record it, go on
                self.stats.add({"t": time.monotonic(), "client": self.idx, "kind": kind, "turn": 0,
                                "outcome": "failed", "status": None, "stream": None,
                                "error": "client exception: " + traceback.format_exc(limit=3)})
                time.sleep(0.2)

    # --- conversations ---------------------------------------------------
    def conv_image(self):
        name, uri = self.rng.choice(self.images)
        turns = self.rng.randint(1, 4)
        msgs = [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": uri}},
            {"type": "text", "text": self.rng.choice(IMAGE_QUESTIONS)}]}]
        for k in range(turns):
            if k:
                msgs.append({"role": "user", "content": self.rng.choice(FOLLOW_UPS)})
            text = self.turn("image", k + 1, msgs)
            if text is None:
                return
            msgs.append({"role": "assistant", "content": text})

    def conv_text(self):
        msgs = [{"role": "system", "content": self.rng.choice(SYSTEM_PROMPTS)}]
        for k in range(self.rng.randint(1, 3)):
            msgs.append({"role": "user", "content": self.rng.choice(TEXT_QUESTIONS)})
            text = self.turn("text", k + 1, msgs)
            if text is None:
                return
            msgs.append({"role": "assistant", "content": text})

    def conv_single(self):
        self.n += 1
        q = self.rng.choice(SINGLE_TEMPLATES).format(n=f"{self.idx}-{self.n}")
        _, uri = self.rng.choice(self.images)
        self.turn("single", 1, [{"role": "user", "content": [
            {"type": "text", "text": q}, {"type": "image_url", "image_url": {"url": uri}}]}])

    def bad_request(self):
        if self.rng.random() < 0.5:
            what = "invalid JSON"
            body = b'{"model": "demo", "messages": [{"role": "user", "content": "hi"'
        else:
            what = "image_url not an image"
            junk = base64.b64encode(b"this is plain text, not a picture " * 4).decode()
            body = json.dumps({"model": "demo", "max_tokens": 8, "stream": self.rng.random() < 0.5,
                               "messages": [{"role": "user", "content": [
                                   {"type": "image_url",
                                    "image_url": {"url": "data:image/png;base64," + junk}},
                                   {"type": "text", "text": "Describe the image."}]}]}).encode()
        while self.running():
            rec = self.send("bad", 0, body, stream=False)
            if rec["outcome"] == "refused":
                self.stats.add(rec)
                self.refused_sleep(rec)
                continue
            if rec["outcome"] == "failed":
                pass
            elif rec["status"] is not None and 400 <= rec["status"] < 500:
                rec["outcome"] = "bad_rejected"
            else:
                rec["outcome"] = "bad_accepted"
                rec["error"] = f"{what}: status {rec['status']}, expected 4xx"
            rec["bad"] = what
            self.stats.add(rec)
            return

    # --- one request ---------------------------------------------------------
    def turn(self, kind, turn, msgs):
        """Sends the history; the answer's text, or None to end the conversation."""
        stream = self.rng.random() < self.a.stream_fraction
        body = {"model": "demo", "messages": msgs, "max_tokens": self.rng.randint(8, 32)}
        if self.rng.random() < 0.5:
            body["temperature"] = 0
        else:
            body["temperature"] = 0.7
            body["seed"] = self.rng.randrange(1 << 31)
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        data = json.dumps(body).encode()
        while self.running():
            rec = self.send(kind, turn, data, stream)
            self.stats.add(rec)
            if rec["outcome"] == "ok":
                return rec.pop("text")
            if rec["outcome"] == "refused":
                self.refused_sleep(rec)
                continue
            time.sleep(0.5)  # failed: do not spin against a sick server
            return None
        return None

    def refused_sleep(self, rec):
        try:
            wait = float(rec.get("retry_after") or 1)
        except ValueError:
            wait = 1.0
        wait = max(0.05, min(wait, 10.0))
        self.stop.wait(min(wait, max(0.0, self.deadline - time.monotonic())))

    def send(self, kind, turn, data, stream):
        a = self.a
        rec = {"t": time.monotonic(), "client": self.idx, "kind": kind, "turn": turn,
               "stream": stream, "status": None, "outcome": "failed"}
        t0 = time.perf_counter()
        c = http.client.HTTPConnection(a.host, self.port, timeout=a.request_timeout)
        try:
            c.request("POST", "/v1/chat/completions", data, {"Content-Type": "application/json"})
            r = c.getresponse()
            rec["status"] = r.status
            if r.status in (429, 503):
                rec["outcome"] = "refused"
                rec["retry_after"] = r.getheader("Retry-After")
                r.read()
                return rec
            if r.status != 200:
                raw = r.read()
                rec["error"] = f"status {r.status}: {raw[:200].decode(errors='replace')}"
                rec["outcome"] = "client_4xx" if 400 <= r.status < 500 else "failed"
                return rec
            if stream:
                self.read_stream(r, t0, rec)
            else:
                ans = json.loads(r.read())
                rec["text"] = ans["choices"][0]["message"].get("content") or ""
                self.take_usage(rec, ans.get("usage"))
                rec["outcome"] = "ok"
            rec["latency"] = time.perf_counter() - t0
            return rec
        except CLIENT_ERRORS as e:
            rec["error"] = f"transport: {type(e).__name__}: {e}"
            rec["transport"] = True
            return rec
        except (ValueError, KeyError, IndexError, TypeError) as e:
            rec["error"] = f"bad answer: {type(e).__name__}: {e}"
            return rec
        finally:
            c.close()

    def read_stream(self, r, t0, rec):
        t_delta = t_content = None
        text, done = [], False
        limit = t0 + self.a.request_timeout
        while True:
            line = r.readline()
            if not line:
                break
            if time.perf_counter() > limit:
                raise socket.timeout("stream past --request-timeout")
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                done = True
                break
            ev = json.loads(payload)
            if ev.get("error"):
                rec["error"] = f"error event: {json.dumps(ev['error'])[:200]}"
                return
            if ev.get("usage"):
                self.take_usage(rec, ev["usage"])
            choices = ev.get("choices") or []
            if choices and "delta" in choices[0]:
                now = time.perf_counter()
                if t_delta is None:
                    t_delta = now
                piece = choices[0]["delta"].get("content")
                if piece:
                    if t_content is None:
                        t_content = now
                    text.append(piece)
        if not done:
            rec["error"] = "transport: stream ended without [DONE]"
            rec["transport"] = True
            return
        t_first = t_content if t_content is not None else t_delta
        if t_first is not None:
            rec["ttft"] = t_first - t0
        rec["text"] = "".join(text)
        rec["outcome"] = "ok"

    @staticmethod
    def take_usage(rec, usage):
        if not usage:
            return
        rec["prompt_tokens"] = usage.get("prompt_tokens")
        rec["completion_tokens"] = usage.get("completion_tokens")
        details = usage.get("prompt_tokens_details") or {}
        if details.get("cached_tokens") is not None:
            rec["cached_tokens"] = details["cached_tokens"]


def load_images(model):
    paths = sorted(glob.glob(os.path.join(model, "samples", "*.png")))
    if not paths:
        paths = sorted(glob.glob(os.path.join(ROOT, "models", "demo", "samples", "*.png")))
    out = []
    for p in paths:
        with open(p, "rb") as f:
            out.append((os.path.basename(p), "data:image/png;base64," + base64.b64encode(f.read()).decode()))
    return out


def default_server_bin():
    for rel in ("build/bin/llava-server", "build/tools/llava-server", "build/llava-server"):
        p = os.path.join(ROOT, rel)
        if os.access(p, os.X_OK):
            return p
    return os.path.join(ROOT, "build/bin/llava-server")


def ms(x):
    return "-" if x is None else f"{x * 1e3:.1f}"


def mib(x):
    return "-" if x is None else f"{x / 2**20:.1f} MiB"


def summarize(a, server, stats, t_start, t_end, m0, m1, types, health_end, load0, load1,
              alive_end, exit_status, killed, exited_early):
    recs = stats.records
    count = lambda o: sum(1 for r in recs if r["outcome"] == o)
    failed = [r for r in recs if r["outcome"] == "failed"]
    transport = sum(1 for r in failed if r.get("transport"))
    server5xx = sum(1 for r in failed if r["status"] is not None and r["status"] >= 500)
    ok = [r for r in recs if r["outcome"] == "ok"]
    ttft_first = [r["ttft"] for r in ok if r.get("ttft") is not None and r["turn"] == 1]
    ttft_follow = [r["ttft"] for r in ok if r.get("ttft") is not None and r["turn"] > 1]
    prompt = sum(r.get("prompt_tokens") or 0 for r in ok if "cached_tokens" in r)
    cached = sum(r["cached_tokens"] for r in ok if "cached_tokens" in r)
    by_kind = {}
    for r in ok:
        k = by_kind.setdefault(r["kind"], {"ok": 0, "prompt_tokens": 0, "cached_tokens": 0})
        k["ok"] += 1
        if "cached_tokens" in r:
            k["prompt_tokens"] += r.get("prompt_tokens") or 0
            k["cached_tokens"] += r["cached_tokens"]
    for k in by_kind.values():
        k["cache_hit_rate"] = k["cached_tokens"] / k["prompt_tokens"] if k["prompt_tokens"] else None

    warm_t = t_start + a.warmup
    samples = [(t, v) for t, v in server.samples if t <= t_end]
    during = [(t, v) for t, v in samples if t >= t_start]
    after = [(t, v) for t, v in samples if t >= warm_t]
    rss = {
        "samples": len(samples),
        "start_bytes": during[0][1] if during else None,  # idle, loaded, before the traffic
        "warmup_end_bytes": after[0][1] if after else None,
        "final_bytes": samples[-1][1] if samples else None,
        "max_bytes": max(v for _, v in samples) if samples else None,
        "slope_mib_per_min_after_warmup": slope_per_minute([(t - warm_t, v) for t, v in after]),
        "max_minus_min_after_warmup_bytes": (max(v for _, v in after) - min(v for _, v in after))
        if after else None,
    }

    metrics = {}
    for series, v1 in sorted(m1.items()):
        name = series.split("{")[0]
        if not name.startswith(("llava_prefix_cache_", "llava_image_cache_")):
            continue
        kind = types.get(name) or ("counter" if name.endswith("_total") else "gauge")
        v0 = m0.get(series)
        metrics[series] = {"type": kind, "start": v0, "end": v1,
                           "delta": (v1 - v0) if v0 is not None else None}

    ok_exit = transport == 0 and server5xx == 0 and not failed and count("bad_accepted") == 0 \
        and alive_end
    wall = t_end - t_start
    return {
        "command": sys.argv, "server_cmd": server.cmd, "server_log": server.log_path,
        "duration_s": wall, "warmup_s": a.warmup, "clients": a.clients, "seed": a.seed,
        "requests": {
            "ok": len(ok), "refused": count("refused"), "failed": len(failed),
            "failed_transport": transport, "failed_5xx": server5xx,
            "failed_other": len(failed) - transport - server5xx,
            "bad_rejected": count("bad_rejected"), "bad_accepted": count("bad_accepted"),
            "unexpected_4xx": count("client_4xx"),
            "ok_per_s": len(ok) / wall if wall > 0 else None,
            "completion_tokens": sum(r.get("completion_tokens") or 0 for r in ok),
            "by_kind": by_kind,
        },
        "ttft_s": {
            "first_turn": {"n": len(ttft_first), **{f"p{p}": percentile(ttft_first, p)
                                                     for p in (50, 90, 99)}},
            "follow_up": {"n": len(ttft_follow), **{f"p{p}": percentile(ttft_follow, p)
                                                     for p in (50, 90, 99)}},
        },
        "prefix_cache": {"prompt_tokens": prompt, "cached_tokens": cached,
                         "hit_rate": cached / prompt if prompt else None},
        "metrics": metrics,
        "health_memory_end": (health_end or {}).get("memory"),
        "rss": rss,
        "loadavg_start": load0, "loadavg_end": load1,
        "server_alive_at_end": alive_end,
        "server_exit_status": exit_status, "server_killed": killed,
        "server_exited_early": exited_early,
        "errors": stats.errors,
        "exit": 0 if ok_exit else 1,
    }


def report(s):
    q, t, rss = s["requests"], s["ttft_s"], s["rss"]
    print(f"soak: {s['duration_s']:.0f} s, {s['clients']} clients, seed {s['seed']}, "
          f"warm-up {s['warmup_s']:.0f} s")
    print(f"requests: ok {q['ok']} ({q['ok_per_s']:.2f}/s, {q['completion_tokens']} tokens), "
          f"refused {q['refused']}, failed {q['failed']} (transport {q['failed_transport']}, "
          f"5xx {q['failed_5xx']}, other {q['failed_other']}), bad input rejected "
          f"{q['bad_rejected']}, bad input accepted {q['bad_accepted']}, unexpected 4xx "
          f"{q['unexpected_4xx']}")
    print("  ok by kind: " + ", ".join(f"{k} {v['ok']}" for k, v in sorted(q["by_kind"].items())))
    for label, key in (("first turns", "first_turn"), ("follow-ups ", "follow_up")):
        d = t[key]
        print(f"ttft {label}: p50 {ms(d['p50'])} ms, p90 {ms(d['p90'])} ms, "
              f"p99 {ms(d['p99'])} ms (n {d['n']})")
    pc = s["prefix_cache"]
    pct = lambda x: "-" if x is None else f"{x * 100:.1f}%"
    print(f"prefix cache: {pc['cached_tokens']} of {pc['prompt_tokens']} prompt tokens cached "
          f"({pct(pc['hit_rate'])}); by kind: " + ", ".join(
              f"{k} {pct(v['cache_hit_rate'])}" for k, v in sorted(q["by_kind"].items())))
    if s["metrics"]:
        print("metrics (counters: delta over the run; gauges: at the end):")
        for series, m in s["metrics"].items():
            if m["type"] == "counter" and m["delta"] is not None:
                print(f"  {series} +{m['delta']:.0f}")
            elif series.endswith("_bytes"):
                print(f"  {series} {m['end']:.0f} ({mib(m['end'])})")
            else:
                print(f"  {series} {m['end']:g}")
    else:
        print("metrics: no llava_prefix_cache_* / llava_image_cache_* series at the end")
    print(f"/health memory at the end: {json.dumps(s['health_memory_end'])}")
    slope = rss["slope_mib_per_min_after_warmup"]
    print(f"rss: traffic start {mib(rss['start_bytes'])}, warm-up end {mib(rss['warmup_end_bytes'])}, "
          f"final {mib(rss['final_bytes'])}, max {mib(rss['max_bytes'])}; after warm-up: slope "
          f"{'-' if slope is None else f'{slope:+.3f}'} MiB/min, max-min "
          f"{mib(rss['max_minus_min_after_warmup_bytes'])} ({rss['samples']} samples)")
    print(f"loadavg: start {s['loadavg_start']}, end {s['loadavg_end']}")
    how = "exited before the end, not stopped by soak.py" if s["server_exited_early"] else \
        "killed after ignoring SIGTERM" if s["server_killed"] else "after SIGTERM"
    print(f"server: alive at the end {s['server_alive_at_end']}, exit status "
          f"{s['server_exit_status']} ({how})")
    for e in s["errors"][:10]:
        print(f"  error: {e.strip()}")
    print(f"result: {'PASS' if s['exit'] == 0 else 'FAIL'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server-bin", default=default_server_bin())
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "demo"))
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0: the server picks a free port")
    ap.add_argument("--parallel", type=int, default=4, help="the server's --parallel")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 0,
                    help="the server's --threads (default: the cores; 0: leave it out)")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="one more server flag, verbatim (repeat): --server-arg=--flag=value")
    ap.add_argument("--server-log", help="server stdout/stderr (default: a temporary file)")
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--warmup", type=float, default=60)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stream-fraction", type=float, default=0.85)
    ap.add_argument("--bad-fraction", type=float, default=0.05)
    ap.add_argument("--request-timeout", type=float, default=120)
    ap.add_argument("--startup-timeout", type=float, default=120)
    ap.add_argument("--json", help="write every number here")
    a = ap.parse_args()

    images = load_images(a.model)
    if not images:
        print("soak: no sample images (models/demo/samples/*.png)", file=sys.stderr)
        return 1
    if not os.access(a.server_bin, os.X_OK):
        print(f"soak: no server binary at {a.server_bin} (build it, or --server-bin)",
              file=sys.stderr)
        return 1
    if a.duration <= a.warmup:
        print(f"soak: warning: --duration {a.duration:g} <= --warmup {a.warmup:g}: "
              f"no RSS samples after the warm-up", file=sys.stderr)

    server = Server(a)
    print(f"soak: {' '.join(server.cmd)} (pid {server.proc.pid}, log {server.log_path})",
          flush=True)
    stop = threading.Event()
    try:
        port = server.wait_port(a.startup_timeout)
        if port is None or not wait_health(a.host, port, a.startup_timeout, server):
            print(f"soak: the server did not come up (exit status {server.proc.poll()}); its log:\n"
                  + server.log_text(), file=sys.stderr)
            server.stop()
            return 1
        status, text = http_get(a.host, port, "/metrics", 30)
        m0, types = parse_metrics(text) if status == 200 else ({}, {})
        load0 = loadavg()
        t_start = time.monotonic()
        deadline = t_start + a.duration
        stats = Stats()
        threads = [threading.Thread(target=Client(i, a, port, images, stats, deadline, stop).run,
                                    daemon=True) for i in range(a.clients)]
        for th in threads:
            th.start()
        next_note = t_start + 30
        while any(th.is_alive() for th in threads):
            time.sleep(0.2)
            now = time.monotonic()
            if not server.alive() and not stop.is_set():
                print(f"soak: the server exited mid-run (status {server.proc.poll()})",
                      file=sys.stderr)
                stop.set()
            if now >= next_note:
                next_note += 30
                with stats.lock:
                    n_ok = sum(1 for r in stats.records if r["outcome"] == "ok")
                    n_bad = sum(1 for r in stats.records if r["outcome"] == "failed")
                rss = server.samples[-1][1] if server.samples else None
                print(f"  {now - t_start:5.0f} s: ok {n_ok}, failed {n_bad}, rss {mib(rss)}",
                      flush=True)
            if now > deadline + a.request_timeout + 10:
                print("soak: clients still busy past the deadline; leaving them", file=sys.stderr)
                stop.set()
                break
        t_end = time.monotonic()
        load1 = loadavg()
        m1, health_end, alive_end = {}, None, False
        try:
            status, text = http_get(a.host, port, "/metrics", 30)
            if status == 200:
                m1, t1 = parse_metrics(text)
                types.update(t1)
            status, text = http_get(a.host, port, "/health", 30)
            alive_end = status == 200 and server.alive()
            health_end = json.loads(text) if status == 200 else None
        except (CLIENT_ERRORS + (ValueError,)) as e:
            print(f"soak: the end scrape failed: {e}", file=sys.stderr)
        exited_early = not server.alive()
        exit_status, killed = server.stop()
    except KeyboardInterrupt:
        stop.set()
        server.stop()
        print("soak: interrupted", file=sys.stderr)
        return 1
    finally:
        if server.alive():
            server.stop()

    s = summarize(a, server, stats, t_start, t_end, m0, m1, types, health_end, load0, load1,
                  alive_end, exit_status, killed, exited_early)
    report(s)
    if a.json:
        s["records"] = stats.records
        s["rss_samples"] = [(round(t - t_start, 3), v) for t, v in server.samples]
        with open(a.json, "w") as f:
            json.dump(s, f, indent=1)
    return s["exit"]


if __name__ == "__main__":
    sys.exit(main())
