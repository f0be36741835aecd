#!/usr/bin/env python3
"""Inter-token latency of running streams while image requests arrive.

    python3 tools/bench/itl_arrivals.py --port 8080 --image IMG [--streams 4] [--images 4]

Against a running llava-server (any build: it only speaks the OpenAI API):
  1. opens --streams streaming /v1/completions (greedy, a long max_tokens);
  2. once every stream is decoding, records --quiet seconds of token
     arrivals with nothing else going on;
  3. sends --images chat requests with the image at once (max_tokens 1) and
     records until the last of them is answered;
  4. closes the streams, then runs the same streams again with no arrivals
     (greedy: the same tokens, so the same contexts) as the control;
  5. prints the p50 / p99 / max gap between consecutive tokens of a stream
     in the quiet window, the arrival window (a gap belongs to the window
     its later token arrives in) and the control over the arrival window's
     token indices, the p99 ratios, and how long the image requests took.
A decode step grows with the streams' contexts (their KV caches), so the
control, not the quiet window, is what the arrival window compares with.

Every token must arrive as its own SSE event, so the streams' sampling is
held to the ids whose text is never empty (--text-ids, the tiny fixture
tokenizer's merges by default, via logit_bias): a model with random weights
and a borrowed tokenizer otherwise emits ids that decode to nothing. Standard
library only; a benchmark tool, not a test.
"""
import argparse, base64, http.client, json, statistics, sys, threading, time


def pct(v, q):
    if not v:
        return float('nan')
    v = sorted(v)
    k = (len(v) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


class Stream(threading.Thread):
    def __init__(self, a, k):
        super().__init__(daemon=True)
        self.a, self.k, self.times, self.stop, self.error = a, k, [], False, None

    def run(self):
        a = self.a
        body = {'prompt': f'Stream {self.k}: once upon a time', 'max_tokens': a.max_tokens,
                'temperature': 0, 'stream': True,
                'logit_bias': {str(i): 100 for i in range(a.text_ids[0], a.text_ids[1] + 1)}}
        try:
            c = http.client.HTTPConnection(a.host, a.port, timeout=600)
            c.request('POST', '/v1/completions', json.dumps(body), {'Content-Type': 'application/json'})
            r = c.getresponse()
            if r.status != 200:
                self.error = f'status {r.status}: {r.read()[:200]!r}'
                return
            while not self.stop:
                line = r.readline()
                if not line:
                    break
                if line.startswith(b'data: ') and b'"text"' in line:
                    self.times.append(time.monotonic())
            c.close()
        except Exception as e:  # a closed connection ends the stream
            if not self.stop:
                self.error = repr(e)


class ImageRequest(threading.Thread):
    def __init__(self, a, k, uri):
        super().__init__(daemon=True)
        self.a, self.k, self.uri, self.t0, self.t1, self.status = a, k, uri, 0, 0, None

    def run(self):
        a = self.a
        body = {'messages': [{'role': 'user', 'content': [
            {'type': 'text', 'text': f'Image request {self.k}: describe it.'},
            {'type': 'image_url', 'image_url': {'url': self.uri, 'detail': a.detail}}]}],
            'max_tokens': 1, 'temperature': 0}
        self.t0 = time.monotonic()
        c = http.client.HTTPConnection(a.host, a.port, timeout=900)
        c.request('POST', '/v1/chat/completions', json.dumps(body), {'Content-Type': 'application/json'})
        r = c.getresponse()
        r.read()
        self.status = r.status
        self.t1 = time.monotonic()
        c.close()


def window(streams, t_from, t_to):
    """Per stream, the token indices [i0, i1) arriving in [t_from, t_to)."""
    out = []
    for st in streams:
        idx = [i for i, t in enumerate(st.times) if i > 0 and t_from <= t < t_to]
        out.append((idx[0], idx[-1] + 1) if idx else (0, 0))
    return out


def gaps(streams, win):
    """The gaps before each token of win, every stream: ms."""
    return [(st.times[i] - st.times[i - 1]) * 1e3
            for st, (i0, i1) in zip(streams, win) for i in range(i0, min(i1, len(st.times)))]


def start_streams(a):
    streams = [Stream(a, k) for k in range(a.streams)]
    for s in streams:
        s.start()
    t_wait = time.monotonic()
    while min(len(s.times) for s in streams) < 20:
        if any(s.error for s in streams) or time.monotonic() - t_wait > 120:
            sys.exit('streams did not start: ' + '; '.join(str(s.error) for s in streams))
        time.sleep(0.01)
    return streams


def stats(v):
    return {'n': len(v), 'p50_ms': pct(v, 50), 'p99_ms': pct(v, 99), 'max_ms': max(v)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--host', default='127.0.0.1')
    ap.add_argument('--port', type=int, default=8080)
    ap.add_argument('--image', required=True)
    ap.add_argument('--streams', type=int, default=4)
    ap.add_argument('--images', type=int, default=4)
    ap.add_argument('--quiet', type=float, default=3.0, help='seconds of the no-arrival window')
    ap.add_argument('--max-tokens', type=int, default=4096)
    ap.add_argument('--text-ids', default='259-499', help='ids the streams sample from: LO-HI')
    ap.add_argument('--detail', default='auto', help="image_url detail: auto (anyres) or low (one tile)")
    a = ap.parse_args()
    a.text_ids = [int(x) for x in a.text_ids.split('-')]
    mime = 'png' if a.image.endswith('.png') else 'jpeg'
    uri = f'data:image/{mime};base64,' + base64.b64encode(open(a.image, 'rb').read()).decode()

    # 1. streams, a quiet window, then the image requests
    streams = start_streams(a)
    t_quiet = time.monotonic()
    time.sleep(a.quiet)
    t_arrive = time.monotonic()
    reqs = [ImageRequest(a, k, uri) for k in range(a.images)]
    for r in reqs:
        r.start()
    for r in reqs:
        r.join()
    t_done = time.monotonic()
    for s in streams:
        s.stop = True
    bad = [s.error for s in streams if s.error] + [f'image status {r.status}' for r in reqs if r.status != 200]
    if bad:
        sys.exit('failed: ' + '; '.join(bad))
    if any(s.times[-1] < t_done - 0.5 for s in streams):
        sys.exit('a stream ended before the image requests were answered: raise --max-tokens')
    quiet_win, busy_win = window(streams, t_quiet, t_arrive), window(streams, t_arrive, t_done)
    time.sleep(1)

    # 2. control: the same streams (greedy: the same tokens, the same contexts)
    #    with no arrivals, over the same token indices as the arrival window
    control = start_streams(a)
    last = max(i1 for _, i1 in busy_win)
    while min(len(s.times) for s in control) < last and not any(s.error for s in control):
        time.sleep(0.05)
    for s in control:
        s.stop = True
    res = {
        'quiet': stats(gaps(streams, quiet_win)),
        'arrivals': stats(gaps(streams, busy_win)),
        'control_same_tokens': stats(gaps(control, busy_win)),
        'images_s': {'first_done': min(r.t1 - r.t0 for r in reqs), 'last_done': t_done - t_arrive},
    }
    res['p99_ratio_vs_control'] = res['arrivals']['p99_ms'] / res['control_same_tokens']['p99_ms']
    res['p99_ratio_vs_quiet'] = res['arrivals']['p99_ms'] / res['quiet']['p99_ms']
    print(json.dumps(res, indent=1))


if __name__ == '__main__':
    main()
