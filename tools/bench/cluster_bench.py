#!/usr/bin/env python3
"""cluster_bench.py - llava-server replicas behind HAProxy (scripts/cluster.sh):
throughput with 3 replicas against 1, and conversation affinity against a
round-robin baseline, in one run on one machine.

  python3 tools/bench/cluster_bench.py [--runs 3] [--model models/demo]
      [--conversations 120] [--clients 16] [--turns 3] [--max-tokens 32]
      [--server-args "--parallel 16"] [--build build]

Throughput: for each run, a cluster of 1 replica then one of 3 (the order
alternates from run to run), each behind the balancer, plays the same
conversations with no think time; requests/s and generated tokens/s, and the
latency of turns, are taken per cluster; medians of the runs are reported
with the ratio 3:1.

Affinity: one cluster of 3 replicas with both front ends (the shipped
consistent hash on the conversation, and round robin on RR_PORT); each run
plays fresh conversations (images not seen before) through each, alternating
which goes first, with think time between turns. Reported per front end: the
share of turns 2+ answered by the replica that answered turn 1, the share
with cached prompt tokens (prefix cache hits), the prompt tokens prefilled
again, and the latency of turns 2+.

The load average is printed before and after. Python 3 standard library.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster_load as cl  # noqa: E402


def loadavg():
    try:
        return open("/proc/loadavg").read().split()[:3]
    except OSError:
        return ["?"] * 3


def summarize(records, elapsed):
    ok = [r for r in records if r.ok]
    later = [r for r in ok if r.turn > 0]
    return {
        "requests": len(records),
        "failed": len(records) - len(ok),
        "rps": len(ok) / elapsed,
        "tok_s": sum(r.completion for r in ok) / elapsed,
        "p50_ms": 1e3 * cl.percentile([r.t1 - r.t0 for r in ok], 0.5),
        "p95_ms": 1e3 * cl.percentile([r.t1 - r.t0 for r in ok], 0.95),
        "later_p50_ms": 1e3 * cl.percentile([r.t1 - r.t0 for r in later], 0.5),
        "prefilled": sum(r.prompt - r.cached for r in later),
        "prompt": sum(r.prompt for r in later),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--model", default=os.path.join(cl.ROOT, "models", "demo"))
    ap.add_argument("--build", default=os.path.join(cl.ROOT, "build"))
    ap.add_argument("--conversations", type=int, default=120)
    ap.add_argument("--affinity-conversations", type=int, default=40)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--think", type=float, default=0.1, help="seconds between turns (affinity)")
    ap.add_argument("--server-args", default="--parallel 16")
    a = ap.parse_args()
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    server = os.path.join(a.build, "bin", "llava-server")
    img_dir = os.path.join(cl.ROOT, "models", "demo", "heldout", "images")
    paths = sorted(os.path.join(img_dir, f) for f in os.listdir(img_dir))
    images = cl.load_images(paths)
    tmp = tempfile.mkdtemp(prefix="cluster_bench.")
    print("machine: %d cores; load average %s" % (os.cpu_count(), " ".join(loadavg())))
    print("model %s; llava-server %s; %d clients, %d turns, max_tokens %d"
          % (a.model, a.server_args, a.clients, a.turns, a.max_tokens))

    # -- throughput: 1 replica against 3 --------------------------------------------------------
    convs = cl.make_conversations(a.conversations, images, turns=a.turns, seed=11,
                                  max_tokens=a.max_tokens)
    tp = {1: [], 3: []}
    for run in range(a.runs):
        for n in ((1, 3) if run % 2 == 0 else (3, 1)):
            c = cl.Cluster(n, os.path.join(tmp, "tp%d_%d" % (run, n)), model=a.model,
                           server=server, server_args=a.server_args)
            c.start()
            try:
                cl.run(c.lb_port, convs[:8], clients=8, think_s=0)  # warm-up
                t0 = time.time()
                recs = cl.run(c.lb_port, convs, clients=a.clients, think_s=0)
                s = summarize(recs, time.time() - t0)
            finally:
                c.stop()
            tp[n].append(s)
            print("  run %d, %d replica(s): %.1f req/s, %.0f tok/s, p50 %.0f ms, p95 %.0f ms, "
                  "%d failed" % (run + 1, n, s["rps"], s["tok_s"], s["p50_ms"], s["p95_ms"],
                                 s["failed"]))

    def med(xs, k):
        return statistics.median(x[k] for x in xs)

    print("\nthroughput (medians of %d alternating runs, %d conversations x %d turns):"
          % (a.runs, a.conversations, a.turns))
    print("| replicas | requests/s | generated tok/s | p50 ms | p95 ms |")
    print("|---|---|---|---|---|")
    for n in (1, 3):
        print("| %d | %.1f | %.0f | %.0f | %.0f |" % (n, med(tp[n], "rps"), med(tp[n], "tok_s"),
                                                    med(tp[n], "p50_ms"), med(tp[n], "p95_ms")))
    print("3 replicas / 1: %.2fx requests/s" % (med(tp[3], "rps") / med(tp[1], "rps")))
    print("load average %s" % " ".join(loadavg()))

    # -- affinity: consistent hash against round robin -----------------------------------------
    c = cl.Cluster(3, os.path.join(tmp, "affinity"), model=a.model, server=server,
                   server_args=a.server_args, round_robin=True)
    c.start()
    res = {"hash": [], "round robin": []}
    k = a.affinity_conversations
    try:
        for run in range(a.runs):
            order = ("hash", "round robin") if run % 2 == 0 else ("round robin", "hash")
            for j, mode in enumerate(order):
                # fresh images: no replica has seen them
                first = (2 * run + j) * k
                imgs = [images[(first + i) % len(images)] for i in range(k)]
                convs = cl.make_conversations(k, imgs, turns=a.turns, seed=100 + 2 * run + j,
                                              max_tokens=a.max_tokens)
                port = c.lb_port if mode == "hash" else c.rr_port
                t0 = time.time()
                recs = cl.run(port, convs, clients=a.clients, think_s=a.think)
                s = summarize(recs, time.time() - t0)
                same, total, cached = cl.affinity(recs)
                s.update(same=same, total=total, cached=cached)
                res[mode].append(s)
                print("  run %d, %s: %d/%d turns 2+ on turn 1's replica, %d with cached tokens, "
                      "%d of %d prompt tokens prefilled again, p50 %.0f ms"
                      % (run + 1, mode, same, total, cached, s["prefilled"], s["prompt"],
                         s["later_p50_ms"]))
    finally:
        c.stop()
    print("\naffinity (turns 2+, %d runs of %d fresh conversations per front end, think %.2f s):"
          % (a.runs, k, a.think))
    print("| front end | on turn 1's replica | with cached tokens | prompt tokens prefilled "
          "again | turn 2+ p50 ms |")
    print("|---|---|---|---|---|")
    for mode in ("hash", "round robin"):
        rs = res[mode]
        same = sum(r["same"] for r in rs)
        total = sum(r["total"] for r in rs)
        cached = sum(r["cached"] for r in rs)
        pre = sum(r["prefilled"] for r in rs)
        prompt = sum(r["prompt"] for r in rs)
        print("| %s | %.1f%% (%d/%d) | %.1f%% | %.1f%% (%d/%d) | %.0f |"
              % (mode, 100.0 * same / max(1, total), same, total, 100.0 * cached / max(1, total),
                 100.0 * pre / max(1, prompt), pre, prompt, med(rs, "later_p50_ms")))
    print("load average %s" % " ".join(loadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
