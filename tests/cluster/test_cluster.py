#!/usr/bin/env python3
"""test_cluster.py - three llava-server replicas behind HAProxy
(deploy/haproxy, scripts/cluster.sh) on loopback, with the demo model:

  200 multi-turn conversations with images, 16 clients. A quarter of the way
  in, replica r2 is killed with SIGKILL (a crash) and, once the balancer has
  seen it down, started again (as a supervisor would); half way in, once r2
  is back, replica r3 is restarted with SIGTERM (a rolling restart: it
  drains, exits 0 and starts again).

Checks:
  - the only failed requests are ones in flight on r2 when it was killed
    (each began before the kill and ended after it, and the balancer's log
    has as many answered 502 by r2); none began after the kill, although
    the health checks took a while to notice (their connections were
    refused and retried on another replica);
  - the rolling restart failed nothing, and r3 exited 0;
  - conversation affinity: of the turns 2+ whose turn-1 replica stayed up,
    at least 95% landed on it, with cached prompt tokens;
  - every conversation of r2 and r3 was served elsewhere while they were down;
  - `cluster.sh stop` leaves no process behind.

Skipped (exit 77) when haproxy is not installed. Arguments: the build
directory (its bin/llava-server is used). The figures are printed.
"""

import os
import signal
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "bench"))
import cluster_load as cl  # noqa: E402

ROOT = cl.ROOT


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def main():
    if not any(os.access(os.path.join(d, "haproxy"), os.X_OK)
               for d in os.environ.get("PATH", "").split(":") + ["/usr/sbin", "/sbin"]):
        print("SKIP: haproxy is not installed (scripts/setup.sh installs it)")
        return 77
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    build = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build")
    server = os.path.join(build, "bin", "llava-server")
    sanitized = "asan" in os.path.basename(os.path.normpath(build))
    tmp_root = os.path.join(build, "testtmp")
    os.makedirs(tmp_root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="cluster.", dir=tmp_root)
    c = cl.Cluster(3, os.path.join(tmp, "cluster"), server=server, drain_grace=2,
                   check_inter="300ms", check_fall=2, check_rise=2,
                   server_args="--parallel 16")
    images = sorted(os.path.join(ROOT, "models", "demo", "heldout", "images", f)
                    for f in os.listdir(os.path.join(ROOT, "models", "demo", "heldout", "images")))
    # Under the sanitizers every request is ~20x slower: fewer conversations
    # keep the test within minutes (the faults and the checks are the same).
    n_convs = 60 if sanitized else 200
    convs = cl.make_conversations(n_convs, cl.load_images(images[:n_convs]), turns=3,
                                  max_tokens=16)
    c.start()
    events = {}
    errors = []
    quarter, half = threading.Event(), threading.Event()

    def on_done(n):
        if n >= n_convs // 4:
            quarter.set()
        if n >= n_convs // 2:
            half.set()

    def faults():
        try:
            quarter.wait()
            pid2 = c.pid(2)
            events["kill"] = time.time()
            cl.kill(pid2, signal.SIGKILL)
            port2 = c.replica_port + 1
            while cl.running(pid2) or not cl.refused(port2):  # gone, its listener closed
                time.sleep(0.001)
            events["kill_done"] = time.time()
            events["r2_down"] = c.wait_state("r2", "DOWN", 30)
            c.sh("replica-start", "2")
            events["r2_up"] = c.wait_state("r2", "UP", 60)
            half.wait()
            pid3 = c.pid(3)
            events["term"] = time.time()
            cl.kill(pid3, signal.SIGTERM)
            events["r3_down"] = c.wait_state("r3", "DOWN", 30)
            while cl.running(pid3):  # not our child (cluster.sh started it): its log says how
                time.sleep(0.02)
            events["r3_exit"] = time.time()
            c.sh("replica-start", "3")
            events["r3_up"] = c.wait_state("r3", "UP", 60)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=faults, daemon=True)
    t.start()
    t0 = time.time()
    try:
        records = cl.run(c.lb_port, convs, clients=16, think_s=0.25, on_done=on_done,
                         timeout=300 if sanitized else 120)
        half.set()  # a run shorter than its faults still lets them finish
        t.join(180)
        elapsed = time.time() - t0
    finally:
        lb_log = c.log("haproxy.log") if os.path.exists(os.path.join(c.dir, "haproxy.log")) else ""
        r3_log = c.log("r3.log") if os.path.exists(os.path.join(c.dir, "r3.log")) else ""
        pids = c.pids()
        c.stop()
    if errors:
        fail("the fault schedule: %s" % errors[0])
    for p in pids:
        if cl.running(p):
            fail("pid %d still runs after cluster.sh stop" % p)

    ok = [r for r in records if r.ok]
    bad = [r for r in records if not r.ok]
    ev = {k: v - t0 for k, v in events.items()}
    print("%d requests in %.1f s (%d conversations, 3 turns): %d answered, %d failed"
          % (len(records), elapsed, len(convs), len(ok), len(bad)))
    print("events (s from the start): " + ", ".join("%s %.2f" % kv for kv in sorted(ev.items(),
                                                                                     key=lambda kv: kv[1])))
    print("r2: SIGKILL seen down by the balancer after %.2f s, back after %.2f s"
          % (events["r2_down"] - events["kill"], events["r2_up"] - events["kill"]))
    print("r3: SIGTERM seen down after %.2f s, exited after %.2f s, back after %.2f s"
          % (events["r3_down"] - events["term"], events["r3_exit"] - events["term"],
             events["r3_up"] - events["term"]))

    # Failures: only what was in flight on r2 at the kill.
    lb_502_r2 = sum(1 for line in lb_log.splitlines() if "/r2 " in line and " 502 " in line)
    print("failed: %d (in flight on r2 at the SIGKILL; the balancer's log has %d answered 502 by r2)"
          % (len(bad), lb_502_r2))
    for r in bad:
        print("  failed: conversation %d turn %d, %.3f-%.3f s, client port %d, status %d: %s"
              % (r.conv, r.turn, r.t0 - t0, r.t1 - t0, r.port, r.status, r.error))
    for r in bad:
        if not (r.t0 <= events["kill_done"] and r.t1 >= events["kill"]):
            fail("conversation %d turn %d failed outside the kill (%.2f-%.2f s): %s"
                 % (r.conv, r.turn, r.t0 - t0, r.t1 - t0, r.error))
        if r.status not in (502, 0):
            fail("conversation %d turn %d: status %d (%s)" % (r.conv, r.turn, r.status, r.error))
    if len(bad) != lb_502_r2:
        fail("%d failed requests but %d 502s from r2 in the balancer's log" % (len(bad), lb_502_r2))
    if len(bad) > 16:
        fail("more failures (%d) than clients" % len(bad))
    after_kill = [r for r in records if r.t0 > events["kill_done"]]
    print("after the kill: %d requests, all answered (%d before the balancer saw r2 down)"
          % (len(after_kill), sum(1 for r in after_kill if r.t0 < events["r2_down"])))
    during_restart = [r for r in records if r.t1 >= events["term"] and r.t0 <= events["r3_up"]]
    print("during r3's rolling restart: %d requests, %d failed"
          % (len(during_restart), sum(1 for r in during_restart if not r.ok)))
    if any(not r.ok for r in during_restart):
        fail("the rolling restart failed requests")
    if "signal 15: draining and exiting" not in r3_log or "[r3] stopped" not in r3_log:
        fail("r3 did not drain and stop cleanly:\n" + r3_log[-2000:])
    served_r3_draining = sum(1 for r in records if r.replica == "r3"
                             and events["term"] <= r.t0 <= events["r3_exit"])
    print("answered by r3 while it drained: %d" % served_r3_draining)

    # Affinity where the replicas stayed as they were: no replica went down or
    # came back between the conversation's turn 1 and this turn (a key whose
    # replica is down lands on another, and goes home when it is back).
    changes = [events[k] for k in ("kill", "r2_down", "r2_up", "term", "r3_down", "r3_up")]
    first = {r.conv: r for r in records if r.turn == 0 and r.ok}
    later = [r for r in ok if r.turn > 0 and r.conv in first]
    steady = [r for r in later if not any(first[r.conv].t0 <= x <= r.t1 for x in changes)]
    same = sum(1 for r in steady if r.replica == first[r.conv].replica)
    cached = sum(1 for r in steady if r.replica == first[r.conv].replica and r.cached > 0)
    for r in steady:
        if r.replica != first[r.conv].replica:
            print("  moved: conversation %d turn %d on %s at %.2f s (turn 1 on %s at %.2f s)"
                  % (r.conv, r.turn, r.replica, r.t0 - t0, first[r.conv].replica,
                     first[r.conv].t0 - t0))
    moved = [r for r in later if r not in steady]
    print("affinity: %d of %d turns 2+ whose replica stayed up landed on it (%.1f%%), %d with "
          "cached tokens; %d turns of conversations whose replica went down were served by %s"
          % (same, len(steady), 100.0 * same / max(1, len(steady)), cached, len(moved),
             sorted(set(r.replica for r in moved))))
    if len(steady) < n_convs // 2:
        fail("too few undisturbed turns to judge affinity (%d)" % len(steady))
    if same < 0.95 * len(steady) or cached < 0.95 * len(steady):
        fail("affinity under 95%")
    per = {}
    for r in ok:
        per[r.replica] = per.get(r.replica, 0) + 1
    print("answered per replica: %s" % dict(sorted(per.items())))
    if len(per) != 3:
        fail("not every replica served")
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
