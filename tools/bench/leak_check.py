#!/usr/bin/env python3
"""leak_check.py - N chat requests with an image against a running llava-server,
8 at a time, and the device memory its /health reports before, halfway and
after (gpu_memory.used_bytes): memory that grows with the request count is a
leak. Standard library only.

    python3 tools/bench/leak_check.py URL IMAGE [N]
"""
import base64
import json
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def health(url):
    with urllib.request.urlopen(url + "/health", timeout=30) as r:
        h = json.load(r)
    return h.get("gpu_memory", {}).get("used_bytes")


def main(argv):
    if len(argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    url, image, n = argv[1].rstrip("/"), argv[2], int(argv[3]) if len(argv) > 3 else 1000
    data = base64.b64encode(open(image, "rb").read()).decode()
    questions = ["What color is the shape?", "How many shapes are there?", "Describe the image."]

    def ask(i):
        body = {"model": "llava", "max_tokens": 8, "temperature": 0,
                "messages": [{"role": "user", "content": [
                    {"type": "text", "text": questions[i % 3]},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + data}}]}]}
        req = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status

    before = health(url)
    statuses = {}
    with ThreadPoolExecutor(8) as pool:
        for half in (0, 1):
            for s in pool.map(ask, range(half * n // 2, (half + 1) * n // 2)):
                statuses[s] = statuses.get(s, 0) + 1
            if half == 0:
                middle = health(url)
    after = health(url)
    mib = lambda b: "?" if b is None else f"{b / 2**20:.1f} MiB"
    print(f"{n} requests, statuses {statuses}; device memory in use: before {mib(before)}, "
          f"after {n // 2} {mib(middle)}, after {n} {mib(after)}; "
          f"growth over the second half {mib(after - middle) if None not in (after, middle) else '?'}")
    return 0 if statuses.get(200) == n else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
