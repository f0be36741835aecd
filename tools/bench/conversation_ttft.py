#!/usr/bin/env python3
"""Time to first token of a three-turn conversation about one image, the
whole history resent each turn (as OpenAI clients do), against a running
llava-server: what the prefix cache saves (docs/PERF_NOTES.md). Each run
is a new conversation (its own system prompt), so the runs after the first
ask about an image the server has seen: what the image cache saves.

    python3 tools/bench/conversation_ttft.py --port 8080 --image IMG [--image IMG2...] [--runs 3]
        [--conv-base N] [--json FILE]
    python3 tools/bench/conversation_ttft.py --compare A.json B.json

--conv-base fixes the conversations' numbers (default: the clock), so that
two servers (caches on, caches off) are asked the same conversations;
--json writes every turn's answer, time and usage; --compare says whether
two such files hold the same answers, turn by turn (exit 1 if not).

Prints, per turn, the client's time to the first streamed token (median of
--runs conversations), the answers and usage.prompt_tokens_details.cached_tokens.
Standard library only."""
import argparse, base64, http.client, json, statistics, time

QUESTIONS = ["Describe the image.", "Which color is the cross?", "How many shapes are there?"]


_conns = {}


def stream_chat(port, messages, max_tokens):
    """One streamed chat request on a kept-alive connection (as the OpenAI SDKs
    keep theirs): (time to the first content token, text, usage)."""
    body = json.dumps({"model": "demo", "messages": messages, "max_tokens": max_tokens,
                       "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    conn = _conns.get(port)
    if conn is None:
        conn = _conns[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0, ttft, text, usage = time.perf_counter(), None, "", None
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        raise SystemExit(f"HTTP {r.status}: {r.read()[:300]!r}")
    while True:
        line = r.readline()
        if not line:
            break
        line = line.decode().strip()
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            break
        ev = json.loads(line[6:])
        if ev.get("usage"):
            usage = ev["usage"]
        for ch in ev.get("choices", []):
            piece = ch.get("delta", {}).get("content")
            if piece:
                if ttft is None:
                    ttft = time.perf_counter() - t0
                text += piece
    r.read()  # the chunked stream's end, so the connection can be used again
    return ttft, text, usage


def conversation(port, uri, max_tokens, run):
    # a system prompt that differs from the first ids on: no run reuses another's
    messages, out = [{"role": "system", "content": f"{run * 7919} is this conversation's number."}], []
    for k, q in enumerate(QUESTIONS):
        content = ([{"type": "image_url", "image_url": {"url": uri}}] if k == 0 else []) + \
                  [{"type": "text", "text": q}]
        messages.append({"role": "user", "content": content})
        ttft, text, usage = stream_chat(port, messages, max_tokens)
        messages.append({"role": "assistant", "content": text})
        out.append((ttft, text, usage))
    return out


def compare(a_path, b_path):
    with open(a_path) as f:
        a = json.load(f)
    with open(b_path) as f:
        b = json.load(f)
    same = True
    for r, (ra, rb) in enumerate(zip(a["runs"], b["runs"])):
        for k, (ta, tb) in enumerate(zip(ra, rb)):
            if ta["text"] != tb["text"]:
                same = False
                print(f"run {r + 1} turn {k + 1}: {ta['text']!r} != {tb['text']!r}")
    n = sum(len(r) for r in a["runs"])
    print(f"{n} answers: {'identical' if same and len(a['runs']) == len(b['runs']) else 'DIFFERENT'}"
          f" ({a_path} vs {b_path})")
    return 0 if same else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int)
    ap.add_argument("--image", action="append", help="repeat: run i asks about image i mod n")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--conv-base", type=int, default=None)
    ap.add_argument("--json")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"))
    a = ap.parse_args()
    if a.compare:
        raise SystemExit(compare(*a.compare))
    if a.port is None or a.image is None:
        ap.error("--port and --image are required")
    uris = []
    for path in a.image:
        with open(path, "rb") as f:
            uris.append("data:image/png;base64," + base64.b64encode(f.read()).decode())
    base = a.conv_base if a.conv_base is not None else int(time.time())
    runs = [conversation(a.port, uris[i % len(uris)], a.max_tokens, base + i) for i in range(a.runs)]
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"runs": [[{"ttft_ms": t * 1e3, "text": x, "usage": u} for t, x, u in r]
                                for r in runs]}, f, indent=1)
    for k in range(len(QUESTIONS)):
        ms = statistics.median(r[k][0] * 1e3 for r in runs)
        u = runs[-1][k][2] or {}
        cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens")
        print(f"turn {k + 1}: ttft {ms:.1f} ms (median of {a.runs}), prompt {u.get('prompt_tokens')}"
              f" cached {cached}: {runs[-1][k][1]!r}")
    # turn 1 is cold (its image never seen) in every run when each has its own image
    all_new = len(uris) >= a.runs
    first = statistics.median(r[0][0] for r in runs) if all_new else runs[0][0][0]
    what = "median turn 1 (each run a new image)" if all_new else "turn 1 of the first run (cold)"
    for k in range(1, len(QUESTIONS)):
        ms = statistics.median(r[k][0] for r in runs)
        print(f"turn {k + 1} / {what}: {ms * 1e3:.1f} / {first * 1e3:.1f} ms"
              f" = {100 * ms / first:.1f}%")
    if a.runs > 1 and len(uris) == 1:  # every run a new conversation: only the first encodes
        later = statistics.median(r[0][0] * 1e3 for r in runs[1:])
        print(f"turn 1: ttft {runs[0][0][0] * 1e3:.1f} ms the first run (image new), {later:.1f} ms"
              f" the later runs (median: new conversations about an image already seen, what the"
              f" image cache saves)")


if __name__ == "__main__":
    main()
