#!/usr/bin/env python3
"""test_routing.py - the balancer's routing (deploy/haproxy/haproxy.cfg and
conversation_key.lua), run by scripts/cluster.sh over three fake replicas
(tests/cluster/fake_replica.py: they say who answered and with which key),
so every rule is checked exactly and in seconds:

  - one conversation, every turn, on one replica: the key is its first user
    message (a shared system prompt skipped), also when the image makes the
    body larger than the balancer's buffer; conversations spread;
  - X-Conversation-Id wins, then prompt_cache_key, then user, each only
    before "messages"; requests with no key (completions, GET) are spread
    by load, with no key sent;
  - a replica whose /health turns 503 gets nothing more, and only its
    conversations move; they come back with it;
  - a replica that is gone (connection refused) before the health checks
    notice: its requests are retried on another replica, none fails;
  - a stream passes through unbuffered: the first event arrives before the
    replica sends the last, and at once (not held 200 ms by the kernel for
    more: option http-no-delay);
  - a body over 32 MiB is refused with 413 before it travels; no replica up:
    503 with Retry-After; both OpenAI-shaped.

Skipped (exit 77) without haproxy.
"""

import base64
import http.client
import json
import os
import signal
import socket
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "bench"))
import cluster_load as cl  # noqa: E402

FAILED = []


def check(cond, msg):
    print(("ok   " if cond else "FAIL ") + msg)
    if not cond:
        FAILED.append(msg)


def post(port, body, headers=None, path="/v1/chat/completions"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    c.request("POST", path, data, h)
    r = c.getresponse()
    out = r.read()
    c.close()
    try:
        return r.status, json.loads(out), r
    except ValueError:
        return r.status, out, r


def recv_until(s, got, needle):
    """got plus what socket s delivers until it holds needle (or EOF)."""
    while needle not in got:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def chat(first_user, system=None, turns=1, **top):
    msgs = [{"role": "system", "content": system}] if system else []
    msgs.append({"role": "user", "content": first_user})
    for t in range(1, turns):
        msgs += [{"role": "assistant", "content": "answer %d" % t},
                 {"role": "user", "content": "follow-up %d" % t}]
    body = dict(top)
    body["messages"] = msgs
    body["max_tokens"] = 8
    return body


def main():
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    if not any(os.access(os.path.join(d, "haproxy"), os.X_OK)
               for d in os.environ["PATH"].split(":")):
        print("SKIP: haproxy is not installed (scripts/setup.sh installs it)")
        return 77
    build = sys.argv[1] if len(sys.argv) > 1 else os.path.join(cl.ROOT, "build")
    tmp_root = os.path.join(build, "testtmp")
    os.makedirs(tmp_root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="routing.", dir=tmp_root)
    state = os.path.join(tmp, "state")
    os.makedirs(state)
    os.environ["FAKE_STATE_DIR"] = state
    c = cl.Cluster(3, os.path.join(tmp, "cluster"), server=os.path.join(HERE, "fake_replica.py"),
                   model="none", drain_grace=0, check_inter="200ms", check_fall=2,
                   check_rise=2)
    c.start()
    try:
        run_checks(c, state)
    finally:
        c.stop()
    if FAILED:
        print("%d check(s) failed" % len(FAILED))
        return 1
    print("PASS")
    return 0


def run_checks(c, state):
    port = c.lb_port
    def image(k):  # conversation k's image: 3 KB, or 200 KB (past the balancer's buffer)
        n = 3000 if k % 2 else 150000
        return "data:image/png;base64," + base64.b64encode(os.urandom(n)).decode()

    images = [image(k) for k in range(30)]

    def first_message(k):
        return [{"type": "image_url", "image_url": {"url": images[k]}},
                {"type": "text", "text": "question %d" % k}]

    # Every turn of a conversation on one replica; conversations spread.
    home = {}
    keys = set()
    for k in range(30):
        first = first_message(k)
        got = []
        for turns in (1, 2, 3):
            st, j, _ = post(port, chat(first, system="You are terse.", turns=turns))
            got.append((st, j["replica"], j["conversation"]))
        same = len(set(got)) == 1 and got[0][0] == 200 and got[0][2]
        check(same, "conversation %d (%s image): 3 turns on %s, key %s" %
              (k, "3 KB" if k % 2 else "200 KB", [g[1] for g in got], got[0][2]))
        home[k] = got[0][1]
        keys.add(got[0][2])
    spread = {r: list(home.values()).count(r) for r in sorted(set(home.values()))}
    check(len(spread) == 3, "30 conversations over the 3 replicas: %s" % spread)
    check(len(keys) == 30, "30 conversations, %d distinct keys" % len(keys))

    # The system prompt is not the key; the first user message is.
    a = post(port, chat("same question", system="system A"))[1]["conversation"]
    b = post(port, chat("same question", system="system B"))[1]["conversation"]
    d = post(port, chat("other question", system="system A"))[1]["conversation"]
    check(a == b and a != d, "the key is the first user message, not the system prompt")

    # The client's keys, in order of precedence.
    h1 = post(port, chat("x1"), {"X-Conversation-Id": "conv-42"})[1]
    h2 = post(port, chat("x2", prompt_cache_key="pk"), {"X-Conversation-Id": "conv-42"})[1]
    check(h1["conversation"] == h2["conversation"] and h1["replica"] == h2["replica"],
          "X-Conversation-Id wins over the body")
    p1 = post(port, {"prompt_cache_key": "pk-7", "messages": [{"role": "user", "content": "a"}]})[1]
    p2 = post(port, {"prompt_cache_key": "pk-7", "user": "u",
                     "messages": [{"role": "user", "content": "b"}]})[1]
    check(p1["conversation"] == p2["conversation"], "prompt_cache_key before messages is the key")
    u1 = post(port, {"user": "alice", "messages": [{"role": "user", "content": "a"}]})[1]
    u2 = post(port, {"user": "alice", "messages": [{"role": "user", "content": "b"}]})[1]
    check(u1["conversation"] == u2["conversation"], "user before messages is the key")
    l1 = post(port, {"messages": [{"role": "user", "content": "a"}], "prompt_cache_key": "pk-7"})[1]
    l2 = post(port, {"messages": [{"role": "user", "content": "b"}], "prompt_cache_key": "pk-7"})[1]
    check(l1["conversation"] != l2["conversation"],
          "prompt_cache_key after messages is not read (a longer later turn may be cut before it)")

    # No key: spread by load, no key sent.
    seen = set()
    keyless = 0
    for i in range(12):
        st, j, _ = post(port, {"prompt": "p%d" % i, "max_tokens": 4}, path="/v1/completions")
        keyless += st == 200 and j["conversation"] is None
        seen.add(j["replica"])
    st, j, _ = post(port, "", path="/v1/models")
    keyless += st == 200 and j["conversation"] is None
    check(keyless == 13 and len(seen) >= 2,
          "13 requests with no key (completions, an empty POST): none sent a key, spread "
          "by load over %s" % sorted(seen))

    # A replica whose /health says 503: nothing more goes to it; only its
    # conversations move, and they come back with it.
    victim = home[0]
    open(os.path.join(state, victim + ".down"), "w").close()
    c.wait_state(victim, "DOWN", 10)
    moved = stayed = 0
    for k in range(30):
        first = first_message(k)
        r = post(port, chat(first, system="You are terse.", turns=2))[1]["replica"]
        if home[k] == victim:
            moved += r != victim
        else:
            stayed += r == home[k]
    n_victim = sum(1 for v in home.values() if v == victim)
    check(moved == n_victim and stayed == 30 - n_victim,
          "%s answering 503: its %d conversations moved, the other %d stayed" %
          (victim, n_victim, 30 - n_victim))
    os.remove(os.path.join(state, victim + ".down"))
    c.wait_state(victim, "UP", 10)
    back = sum(1 for k in range(30) if home[k] == victim and post(
        port, chat(first_message(k), system="You are terse.", turns=3))[1]["replica"] == victim)
    check(back == n_victim, "%s healthy again: its conversations are back (%d of %d)" %
          (victim, back, n_victim))

    # A replica gone before the checks notice: retried elsewhere, none fails.
    gone = home[1]
    pid = c.pid(int(gone[1:]))
    cl.kill(pid, signal.SIGKILL)
    while cl.running(pid) or not cl.refused(c.replica_port + int(gone[1:]) - 1):
        time.sleep(0.005)
    t0 = time.time()
    results = []
    for k in range(30):
        if home[k] != gone:
            continue
        first = first_message(k)
        st, j, _ = post(port, chat(first, system="You are terse.", turns=2))
        results.append((st, j.get("replica") if isinstance(j, dict) else None))
    quick = time.time() - t0
    check(all(st == 200 and r != gone for st, r in results),
          "%s killed: its %d conversations' requests, sent before the checks noticed "
          "(%.2f s), were all answered elsewhere: %s" % (gone, len(results), quick, results))
    c.sh("replica-start", gone[1:])
    c.wait_state(gone, "UP", 10)

    # Streams are not buffered.
    s = socket.create_connection(("127.0.0.1", port))
    body = json.dumps(chat("stream me", stream=True)).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    t0 = time.time()
    got = recv_until(s, b"", b"data: first")
    t_first = time.time() - t0
    got = recv_until(s, got, b"[DONE]")
    t_all = time.time() - t0
    s.close()
    check(t_first < 0.15 and t_all >= 0.9 and b"[DONE]" in got,
          "a stream's first event after %.2f s, the last after %.2f s (the replica waits 1 s)"
          % (t_first, t_all))

    # Over the body cap: 413 from the balancer, before the body travels.
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 33554433\r\n\r\n{" + b" " * 100000)  # more than the buffer
    s.settimeout(5)
    resp = b""
    try:
        while b"}}" not in resp:
            chunk = s.recv(65536)
            if not chunk:
                break
            resp += chunk
    except socket.timeout:
        pass
    s.close()
    check(resp.startswith(b"HTTP/1.1 413") and b'"code":"request_too_large"' in resp,
          "a 32 MiB + 1 body: %s" % resp.split(b"\r\n")[0].decode(errors="replace"))

    # No replica up: 503, OpenAI-shaped, with Retry-After.
    for i in (1, 2, 3):
        open(os.path.join(state, "r%d.down" % i), "w").close()
    for i in (1, 2, 3):
        c.wait_state("r%d" % i, "DOWN", 10)
    st, j, r = post(port, chat("anyone?"))
    check(st == 503 and isinstance(j, dict) and j["error"]["code"] == "no_replica"
          and r.getheader("Retry-After") == "1", "no replica up: %d %s" % (st, j))
    for i in (1, 2, 3):
        os.remove(os.path.join(state, "r%d.down" % i))


if __name__ == "__main__":
    sys.exit(main())
