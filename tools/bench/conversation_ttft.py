#!/usr/bin/env python3
"""Time to first token of a three-turn conversation about one image, the
whole history resent each turn (as OpenAI clients do), against a running
llava-server: what the prefix cache saves (docs/PERF_NOTES.md). Each run
is a new conversation (its own system prompt), so the runs after the first
ask about an image the server has seen: what the image cache saves.

    python3 tools/bench/conversation_ttft.py --port 8080 --image IMG [--runs 3]

Prints, per turn, the client's time to the first streamed token (median of
--runs conversations), the answers and usage.prompt_tokens_details.cached_tokens.
Standard library only."""
import argparse, base64, json, statistics, time, urllib.request

QUESTIONS = ["Describe the image.", "Which color is the cross?", "How many shapes are there?"]


def stream_chat(port, messages, max_tokens):
    body = json.dumps({"model": "demo", "messages": messages, "max_tokens": max_tokens,
                       "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", body,
                                 {"Content-Type": "application/json"})
    t0, ttft, text, usage = time.perf_counter(), None, "", None
    with urllib.request.urlopen(req) as r:
        for line in r:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if ev.get("usage"):
                usage = ev["usage"]
            for ch in ev.get("choices", []):
                piece = ch.get("delta", {}).get("content")
                if piece:
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                    text += piece
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=24)
    a = ap.parse_args()
    with open(a.image, "rb") as f:
        uri = "data:image/png;base64," + base64.b64encode(f.read()).decode()
    runs = [conversation(a.port, uri, a.max_tokens, int(time.time()) + i) for i in range(a.runs)]
    for k in range(len(QUESTIONS)):
        ms = statistics.median(r[k][0] * 1e3 for r in runs)
        u = runs[-1][k][2] or {}
        cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens")
        print(f"turn {k + 1}: ttft {ms:.1f} ms (median of {a.runs}), prompt {u.get('prompt_tokens')}"
              f" cached {cached}: {runs[-1][k][1]!r}")
    if a.runs > 1:  # every run is a new conversation: only the first encodes the image
        later = statistics.median(r[0][0] * 1e3 for r in runs[1:])
        print(f"turn 1: ttft {runs[0][0][0] * 1e3:.1f} ms the first run (image new), {later:.1f} ms"
              f" the later runs (median: new conversations about an image already seen, what the"
              f" image cache saves)")


if __name__ == "__main__":
    main()
