#!/usr/bin/env python3
"""test_deploy_files.py - the deployment files agree with each other and with
the server (ctest: deploy_files). Nothing is started and nothing is fetched.

  /usr/bin/python3 tests/deploy/test_deploy_files.py      (from anywhere)

What it checks, and why:
  - deploy/k8s/*.yaml parse, every object has apiVersion, kind, metadata.name;
  - each probe asks for a path the container really serves: a GET route of
    llava-server (read out of src/server/http.c's route table) or of
    HAProxy's stats frontend (read out of deploy/k8s/haproxy.cfg), on a port
    the container declares, which is the port the program listens on (the
    --port of llava-server's command, LLAVA_LB_STATS_PORT for HAProxy): a
    probe on a wrong path or port fails every pod, or never fails at all;
  - llava-server runs as PID 1 in exec form, named after its pod, and its
    probes, preStop drain and terminationGracePeriodSeconds fit its
    --drain-grace and --drain-timeout (a SIGKILL or a liveness restart must
    never cut a drain short);
  - Services and the PodDisruptionBudget select the Deployments' pods, and
    name container ports that exist;
  - deploy/kustomization.yaml names files that exist, its ConfigMap gives
    every key the HAProxy pod mounts, and the mount puts each file where
    haproxy.cfg reads it ($LLAVA_DEPLOY_DIR/haproxy/...);
    `kubectl kustomize deploy/` renders, where kubectl is installed;
  - deploy/k8s/haproxy.cfg is deploy/haproxy/haproxy.cfg except for its
    server lines, its resolvers section, the health-check lines it copies
    into llava_least_busy, and comments, so the two cannot drift apart; its
    server-template lines resolve the headless Service; `haproxy -c` passes
    on both, where haproxy is installed;
  - packaging/llava-server@.service.in has the plain unit's hardening, takes
    its port from the instance (%i) and stops later than a drain ends;
    `systemd-analyze verify` accepts it, where installed.

Exit 0: passed; 1: failed; 77: skipped (PyYAML missing).
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:
    print("test_deploy_files: skipped: PyYAML is not installed (python3-yaml)")
    sys.exit(77)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")
K8S = os.path.join(DEPLOY, "k8s")
SHIPPED_CFG = os.path.join(DEPLOY, "haproxy", "haproxy.cfg")
K8S_CFG = os.path.join(K8S, "haproxy.cfg")
DRAIN_TIMEOUT_DEFAULT = 30  # llava-server --drain-timeout's default
DRAIN_GRACE_DEFAULT = 0

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)


def note(msg):
    print("  " + msg)


def read(path, exact=False):
    # exact: no newline translation (the error pages are CRLF, and must
    # reach the ConfigMap so)
    with open(path, encoding="utf-8", newline="" if exact else None) as f:
        return f.read()


# ---- what the programs serve ----------------------------------------------

def server_get_routes():
    """GET paths of llava-server's route table ({"GET", "/health", ...})."""
    text = read(os.path.join(ROOT, "src", "server", "http.c"))
    routes = set(re.findall(r'\{\s*"GET"\s*,\s*"([^"]+)"', text))
    if "/health" not in routes:
        fail("src/server/http.c: no GET /health found in the route table (parser out of date?)")
    return routes


def cfg_sections(text):
    """haproxy.cfg as [(header, [lines])], comments and blank lines dropped."""
    sections, cur = [], None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not raw[0].isspace():
            cur = (line, [])
            sections.append(cur)
        elif cur is not None:
            cur[1].append(line)
        else:
            fail("haproxy.cfg: an indented line before any section: " + line)
    return sections


def section(sections, header):
    for h, lines in sections:
        if h == header:
            return lines
    return None


def stats_routes(sections):
    """Paths HAProxy's `frontend stats` answers: its stats uri and the
    exporter's path."""
    lines = section(sections, "frontend stats") or []
    paths = set()
    for line in lines:
        m = re.match(r"stats uri (\S+)", line)
        if m:
            paths.add(m.group(1))
        m = re.search(r"use-service prometheus-exporter if \{ path (\S+) \}", line)
        if m:
            paths.add(m.group(1))
    return paths


def env_default(text, var):
    """The default of "${VAR-default}" in a config."""
    m = re.search(r"\$\{" + var + r"-([^}]*)\}", text)
    return m.group(1) if m else None


# ---- manifests --------------------------------------------------------------

def load_manifests():
    objs = []
    for name in sorted(os.listdir(K8S)):
        if not name.endswith((".yaml", ".yml")):
            continue
        path = os.path.join(K8S, name)
        try:
            docs = [d for d in yaml.safe_load_all(read(path)) if d is not None]
        except yaml.YAMLError as e:
            fail("%s does not parse: %s" % (name, e))
            continue
        for d in docs:
            where = "%s: %s" % (name, d.get("kind", "?"))
            for key in ("apiVersion", "kind"):
                if not d.get(key):
                    fail(where + " has no " + key)
            if not (d.get("metadata") or {}).get("name"):
                fail(where + " has no metadata.name")
            d["_file"] = name
            objs.append(d)
    if not objs:
        fail("no manifests in deploy/k8s")
    return objs


def of_kind(objs, kind):
    return [o for o in objs if o.get("kind") == kind]


def label_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def flag(argv, name):
    """The value after --name in an argv list, or None."""
    for i, a in enumerate(argv[:-1]):
        if a == name:
            return argv[i + 1]
    return None


def env_value(container, name):
    for e in container.get("env") or []:
        if e.get("name") == name:
            return e
    return None


def resolve_port(container, port):
    """A probe's or targetPort's port, by name or number, as the number a
    containerPort declares (None if it declares none)."""
    for p in container.get("ports") or []:
        if isinstance(port, str) and p.get("name") == port:
            return p["containerPort"]
        if isinstance(port, int) and p.get("containerPort") == port:
            return port
    return None


def is_llava(container):
    argv = (container.get("command") or []) + (container.get("args") or [])
    return bool(argv) and os.path.basename(argv[0]) == "llava-server"


def is_haproxy(container):
    return str(container.get("image", "")).split(":")[0].split("/")[-1] == "haproxy"


def check_llava_container(dep, c, routes):
    where = "Deployment %s container %s" % (dep["metadata"]["name"], c["name"])
    spec = dep["spec"]["template"]["spec"]
    cmd = c.get("command") or []
    argv = cmd + (c.get("args") or [])
    # PID 1 must be the server itself: a shell or make between would take
    # SIGTERM (or ignore it) and the drain would never start.
    if not cmd or not cmd[0].startswith("/") or os.path.basename(cmd[0]) != "llava-server":
        fail(where + ": command must run llava-server by absolute path (exec form), got %r" % cmd[:1])
    port = flag(argv, "--port")
    if port is None or not port.isdigit():
        fail(where + ": no numeric --port in its command")
        port = None
    else:
        port = int(port)
    if flag(argv, "--host") != "0.0.0.0":
        fail(where + ": --host must be 0.0.0.0 (the pod's address), got %r" % flag(argv, "--host"))
    rid = flag(argv, "--replica-id")
    if rid != "$(POD_NAME)":
        fail(where + ": --replica-id should be $(POD_NAME), got %r" % rid)
    pod_name = env_value(c, "POD_NAME")
    if not pod_name or ((pod_name.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") != "metadata.name":
        fail(where + ": POD_NAME must come from the downward API (metadata.name)")
    grace = int(flag(argv, "--drain-grace") or DRAIN_GRACE_DEFAULT)
    timeout = int(flag(argv, "--drain-timeout") or DRAIN_TIMEOUT_DEFAULT)
    drain = grace + timeout
    if grace <= 0:
        fail(where + ": no --drain-grace: the listener would close before readiness and HAProxy see the 503")
    tgps = spec.get("terminationGracePeriodSeconds", 30)
    if not tgps > drain:
        fail(where + ": terminationGracePeriodSeconds %s is not above drain-grace + drain-timeout (%d)" % (tgps, drain))
    declared = [p.get("containerPort") for p in c.get("ports") or []]
    if port is not None and port not in declared:
        fail(where + ": --port %d is not a containerPort (%s)" % (port, declared))
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c.get(kind)
        if not probe:
            fail(where + ": no " + kind)
            continue
        get = probe.get("httpGet") or {}
        if get.get("path") not in routes:
            fail(where + ": %s path %r is not a GET route of llava-server" % (kind, get.get("path")))
        n = resolve_port(c, get.get("port"))
        if n is None:
            fail(where + ": %s port %r is not a containerPort" % (kind, get.get("port")))
        elif port is not None and n != port:
            fail(where + ": %s port %d is not the server's --port %d" % (kind, n, port))
    period = lambda p: p.get("periodSeconds", 10)
    thresh = lambda p: p.get("failureThreshold", 3)
    live, ready, start = c.get("livenessProbe") or {}, c.get("readinessProbe") or {}, c.get("startupProbe") or {}
    # Liveness must not restart a pod that is draining (503 all along).
    if live and not period(live) * thresh(live) > drain:
        fail(where + ": livenessProbe fails after %ds, not above the drain's %ds" % (period(live) * thresh(live), drain))
    # Readiness must see the drain's 503 within its grace.
    if ready and not period(ready) * thresh(ready) < grace:
        fail(where + ": readinessProbe takes %ds to fail, not under --drain-grace %ds" % (period(ready) * thresh(ready), grace))
    # Loading a model takes minutes: at least 5 of them before giving up.
    if start and period(start) * thresh(start) < 300:
        fail(where + ": startupProbe gives the model %ds to load (want 300 or more)" % (period(start) * thresh(start)))
    pre = (((c.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command") or []
    if not any("kill -TERM 1" in part for part in pre):
        fail(where + ": the preStop hook does not drain PID 1 (kill -TERM 1)")
    note("%s: port %s, probes on %s, drain %ds < grace period %ds" % (
        where, port, sorted({(c.get(k) or {}).get("httpGet", {}).get("path") for k in ("startupProbe", "readinessProbe", "livenessProbe")}), drain, tgps))
    return port


def check_haproxy_container(dep, c, cfg_text, sections):
    where = "Deployment %s container %s" % (dep["metadata"]["name"], c["name"])
    paths = stats_routes(sections)
    if not paths:
        fail("deploy/k8s/haproxy.cfg: no stats frontend paths found")

    def env(name):
        e = env_value(c, name)
        if e is not None and "value" in e:
            return e["value"]
        return env_default(cfg_text, name)

    stats_port, lb_port = env("LLAVA_LB_STATS_PORT"), env("LLAVA_LB_PORT")
    if env("LLAVA_LB_ADDR") != "0.0.0.0":
        fail(where + ": LLAVA_LB_ADDR must be 0.0.0.0 (loopback is unreachable from other pods)")
    declared = [p.get("containerPort") for p in c.get("ports") or []]
    for what, port in (("LLAVA_LB_PORT", lb_port), ("LLAVA_LB_STATS_PORT", stats_port)):
        if port is None or int(port) not in declared:
            fail(where + ": %s %s is not a containerPort (%s)" % (what, port, declared))
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c.get(kind)
        if not probe:
            if kind != "startupProbe":
                fail(where + ": no " + kind)
            continue
        get = probe.get("httpGet") or {}
        if get.get("path") not in paths:
            fail(where + ": %s path %r is not served by the stats frontend (%s)" % (kind, get.get("path"), sorted(paths)))
        n = resolve_port(c, get.get("port"))
        if n is None:
            fail(where + ": %s port %r is not a containerPort" % (kind, get.get("port")))
        elif stats_port is not None and n != int(stats_port):
            fail(where + ": %s port %d is not the stats port %s" % (kind, n, stats_port))

    # Where the mounted ConfigMap puts each file, against where haproxy.cfg
    # reads it.
    deploy_dir = env("LLAVA_DEPLOY_DIR")
    mounted = {}  # path in the container -> ConfigMap key
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"].get("volumes") or []}
    for m in c.get("volumeMounts") or []:
        cm = (vols.get(m["name"]) or {}).get("configMap")
        if not cm:
            continue
        for item in cm.get("items") or []:
            mounted[os.path.normpath(os.path.join(m["mountPath"], item["path"]))] = (cm["name"], item["key"])
    wanted = re.findall(r'"\$\{LLAVA_DEPLOY_DIR-[^}]*\}/([^"]+)"', cfg_text)
    if not wanted:
        fail("deploy/k8s/haproxy.cfg: no ${LLAVA_DEPLOY_DIR-...} paths found")
    for rel in wanted:
        if os.path.normpath(os.path.join(deploy_dir or "", rel)) not in mounted:
            fail(where + ": haproxy.cfg reads $LLAVA_DEPLOY_DIR/%s, which no ConfigMap item mounts (%s)" % (rel, sorted(mounted)))
    # The official image runs haproxy -f /usr/local/etc/haproxy/haproxy.cfg
    # unless told otherwise.
    argv = (c.get("command") or []) + (c.get("args") or [])
    cfg_path = flag(argv, "-f") or "/usr/local/etc/haproxy/haproxy.cfg"
    if cfg_path not in mounted:
        fail(where + ": %s (the config HAProxy reads) is not mounted" % cfg_path)
    note("%s: stats probes on %s port %s; %d files mounted" % (where, sorted(paths), stats_port, len(mounted)))
    return mounted


def check_k8s(objs, routes, cfg_text, sections):
    deployments = of_kind(objs, "Deployment")
    pods = {}  # Deployment name -> (pod labels, containers)
    llava_dep, mounts = None, {}
    for dep in deployments:
        name = dep["metadata"]["name"]
        tmpl = dep["spec"]["template"]
        labels = (tmpl.get("metadata") or {}).get("labels") or {}
        if not label_match(dep["spec"].get("selector", {}).get("matchLabels"), labels):
            fail("Deployment %s: its selector does not match its pod labels" % name)
        pods[name] = (labels, tmpl["spec"]["containers"])
        for c in tmpl["spec"]["containers"]:
            if is_llava(c):
                llava_dep = dep
                check_llava_container(dep, c, routes)
            elif is_haproxy(c):
                mounts.update(check_haproxy_container(dep, c, cfg_text, sections))
            else:
                fail("Deployment %s container %s: neither llava-server nor haproxy; nothing checks it" % (name, c["name"]))
    if llava_dep is None:
        fail("no Deployment runs llava-server")
    elif llava_dep["spec"].get("replicas", 1) < 2:
        fail("Deployment %s: fewer than 2 replicas" % llava_dep["metadata"]["name"])

    def selected(selector):
        return [n for n, (labels, _) in pods.items() if label_match(selector, labels)]

    headless = None
    for svc in of_kind(objs, "Service"):
        name = svc["metadata"]["name"]
        hits = selected(svc["spec"].get("selector"))
        if len(hits) != 1:
            fail("Service %s selects %s, not one Deployment's pods" % (name, hits or "nothing"))
            continue
        containers = pods[hits[0]][1]
        for p in svc["spec"].get("ports") or []:
            target = p.get("targetPort", p.get("port"))
            if not any(resolve_port(c, target) for c in containers):
                fail("Service %s: targetPort %r is not a containerPort of %s" % (name, target, hits[0]))
        if svc["spec"].get("clusterIP") == "None" and llava_dep is not None and hits[0] == llava_dep["metadata"]["name"]:
            headless = svc
        note("Service %s -> %s pods" % (name, hits[0]))
    if headless is None:
        fail("no headless Service (clusterIP: None) selects the llava-server pods")
    else:
        # The balancers resolve that Service (haproxy.cfg's LLAVA_REPLICAS).
        for labels, containers in pods.values():
            for c in containers:
                e = env_value(c, "LLAVA_REPLICAS") if is_haproxy(c) else None
                if is_haproxy(c) and not (e and str(e.get("value", "")).startswith(headless["metadata"]["name"] + ".")):
                    fail("container %s: LLAVA_REPLICAS %r is not the headless Service %s's name"
                         % (c["name"], e and e.get("value"), headless["metadata"]["name"]))
    pdbs = of_kind(objs, "PodDisruptionBudget")
    if not pdbs:
        fail("no PodDisruptionBudget")
    for pdb in pdbs:
        hits = selected(pdb["spec"].get("selector", {}).get("matchLabels"))
        if llava_dep is None or hits != [llava_dep["metadata"]["name"]]:
            fail("PodDisruptionBudget %s selects %s, not the llava-server pods" % (pdb["metadata"]["name"], hits))
    return headless, mounts


# ---- kustomize ----------------------------------------------------------------

def check_kustomization(mounts):
    path = os.path.join(DEPLOY, "kustomization.yaml")
    if not os.path.exists(path):
        fail("deploy/kustomization.yaml missing")
        return
    k = yaml.safe_load(read(path))
    for res in k.get("resources") or []:
        if not os.path.exists(os.path.join(DEPLOY, res)):
            fail("kustomization: resource %s does not exist" % res)
    keys = {}
    for gen in k.get("configMapGenerator") or []:
        for entry in gen.get("files") or []:
            key, _, rel = entry.rpartition("=")
            key = key or os.path.basename(rel)
            if not os.path.isfile(os.path.join(DEPLOY, rel)):
                fail("kustomization: configMapGenerator %s: %s does not exist" % (gen["name"], rel))
            keys[(gen["name"], key)] = rel
    for target, cmkey in sorted(mounts.items()):
        if cmkey not in keys:
            fail("the HAProxy pod mounts key %s of ConfigMap %s, which the kustomization does not generate" % (cmkey[1], cmkey[0]))
    note("kustomization: %d resources, %d generated ConfigMap keys" % (len(k.get("resources") or []), len(keys)))

    kubectl = shutil.which("kubectl")
    if not kubectl:
        note("kubectl kustomize: skipped (no kubectl on PATH)")
        return
    try:
        r = subprocess.run([kubectl, "kustomize", DEPLOY], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        fail("kubectl kustomize deploy/ took over 60 s")
        return
    if r.returncode != 0:
        fail("kubectl kustomize deploy/ failed: " + r.stderr.strip())
        return
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    cms = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    # Every ConfigMap volume now names a generated (hash-suffixed) ConfigMap
    # holding the keys it mounts, byte for byte the repository's files.
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        for v in d["spec"]["template"]["spec"].get("volumes") or []:
            cm = v.get("configMap")
            if not cm:
                continue
            data = (cms.get(cm["name"]) or {}).get("data")
            if data is None:
                fail("kustomize output: Deployment %s mounts ConfigMap %s, which it does not render" % (d["metadata"]["name"], cm["name"]))
                continue
            for item in cm.get("items") or []:
                if item["key"] not in data:
                    fail("kustomize output: ConfigMap %s has no key %s" % (cm["name"], item["key"]))
    for (gen, key), rel in keys.items():
        rendered = [c for n, c in cms.items() if n.startswith(gen + "-") or n == gen]
        if rendered and (rendered[0].get("data") or {}).get(key) != read(os.path.join(DEPLOY, rel), exact=True):
            fail("kustomize output: ConfigMap %s key %s is not %s" % (gen, key, rel))
    note("kubectl kustomize deploy/: %d objects rendered" % len(docs))


# ---- the two haproxy.cfg -----------------------------------------------------

def check_cfg_drift(shipped, k8s, headless):
    """k8s = shipped, but for server lines, resolvers and the copied checks."""
    check_prefixes = ("option httpchk", "http-check ", "default-server ")

    def norm(sections, k8s_side):
        out = []
        aff = section(sections, "backend llava_affinity") or []
        aff_checks = [l for l in aff if l.startswith(check_prefixes)]
        for header, lines in sections:
            if header.startswith("resolvers "):
                continue
            kept = [l for l in lines if not l.startswith(("server ", "server-template "))]
            if k8s_side and header == "backend llava_least_busy":
                extra = [l for l in kept if l.startswith(check_prefixes)]
                if extra != aff_checks:
                    fail("deploy/k8s/haproxy.cfg: llava_least_busy's health-check lines are not llava_affinity's")
                kept = [l for l in kept if not l.startswith(check_prefixes)]
            out.append((header, kept))
        return out

    a, b = norm(shipped, False), norm(k8s, True)
    if a != b:
        for (ha, la), (hb, lb) in zip(a, b):
            if (ha, la) != (hb, lb):
                fail("deploy/k8s/haproxy.cfg differs from deploy/haproxy/haproxy.cfg in [%s] / [%s]: %s"
                     % (ha, hb, sorted(set(la) ^ set(lb))))
                break
        else:
            fail("deploy/k8s/haproxy.cfg and deploy/haproxy/haproxy.cfg have different sections: %s vs %s"
                 % ([h for h, _ in a], [h for h, _ in b]))

    resolvers = [h.split()[1] for h, _ in k8s if h.startswith("resolvers ")]
    for backend in ("backend llava_affinity", "backend llava_least_busy"):
        lines = section(k8s, backend) or []
        tmpls = [l for l in lines if l.startswith("server-template ")]
        if not tmpls or any(l.startswith("server ") for l in lines):
            fail("deploy/k8s/haproxy.cfg [%s]: want server-template lines only" % backend)
        for l in tmpls:
            m = re.search(r'"?\$\{LLAVA_REPLICAS-([^}]+)\}:(\d+)"?|\s([a-z0-9.-]+\.svc\.[a-z0-9.-]+):(\d+)', l)
            if not m:
                fail("deploy/k8s/haproxy.cfg: cannot read the address of: " + l)
                continue
            host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            r = re.search(r"\bresolvers (\S+)", l)
            if not r or r.group(1) not in resolvers:
                fail("deploy/k8s/haproxy.cfg: %s names no defined resolvers section" % backend)
            if headless is not None:
                name = headless["metadata"]["name"]
                ns = headless["metadata"].get("namespace", "default")
                if not host.startswith("%s.%s.svc." % (name, ns)):
                    fail("deploy/k8s/haproxy.cfg: %s resolves %s, not the headless Service %s.%s" % (backend, host, name, ns))
                ports = [p["port"] for p in headless["spec"]["ports"]]
                if int(port) not in ports:
                    fail("deploy/k8s/haproxy.cfg: %s uses port %s, not the headless Service's %s" % (backend, port, ports))
    note("deploy/k8s/haproxy.cfg = deploy/haproxy/haproxy.cfg but servers, resolvers %s and checks" % resolvers)


def check_haproxy_c():
    haproxy = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None)
    if not haproxy:
        note("haproxy -c: skipped (no haproxy)")
        return
    env = dict(os.environ, LLAVA_DEPLOY_DIR=DEPLOY)
    for cfg in (SHIPPED_CFG, K8S_CFG):
        rel = os.path.relpath(cfg, ROOT)
        r = subprocess.run([haproxy, "-c", "-f", cfg], env=env, capture_output=True, text=True, timeout=30)
        if r.returncode == 0:
            note("haproxy -c -f %s: valid" % rel)
            continue
        out = (r.stdout + r.stderr).strip()
        # parse-resolv-conf needs a nameserver in /etc/resolv.conf; a build
        # box without one says nothing about the file.
        alerts = [l for l in out.splitlines() if "ALERT" in l]
        if cfg == K8S_CFG and alerts and all("resolv" in l.lower() for l in alerts):
            note("haproxy -c -f %s: skipped (this machine's resolv.conf: %s)" % (rel, alerts[0]))
            continue
        fail("haproxy -c -f %s:\n%s" % (rel, out))


# ---- systemd template --------------------------------------------------------

def unit_sections(text):
    out, cur = {}, None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        m = re.match(r"\[(\w+)\]$", line)
        if m:
            cur = out.setdefault(m.group(1), [])
            continue
        if cur is None or "=" not in line:
            fail("unit: line outside a section or without '=': " + line)
            continue
        k, _, v = line.partition("=")
        cur.append((k.strip(), v.strip()))
    return out


def check_systemd_template():
    tpath = os.path.join(ROOT, "packaging", "llava-server@.service.in")
    ppath = os.path.join(ROOT, "packaging", "llava-server.service.in")
    if not os.path.exists(tpath):
        fail("packaging/llava-server@.service.in missing")
        return
    text = read(tpath)
    t, p = unit_sections(text), unit_sections(read(ppath))
    for s in ("Unit", "Service", "Install"):
        if s not in t:
            fail("llava-server@.service.in: no [%s] section" % s)
    svc = dict(t.get("Service", []))
    execs = [v for k, v in t.get("Service", []) if k == "ExecStart"]
    if len(execs) != 1:
        fail("llava-server@.service.in: want one ExecStart, got %d" % len(execs))
        return
    argv = execs[0].split()
    if not argv[0].startswith("@LLAVA_BIN_DIR@/llava-server"):
        fail("llava-server@.service.in: ExecStart does not run @LLAVA_BIN_DIR@/llava-server")
    if flag(argv, "--port") != "%i":
        fail("llava-server@.service.in: ExecStart's --port is not %%i (got %r)" % flag(argv, "--port"))
    if "%i" not in (flag(argv, "--replica-id") or ""):
        fail("llava-server@.service.in: --replica-id does not name the instance")
    if flag(argv, "--host") != "127.0.0.1":
        fail("llava-server@.service.in: --host is not 127.0.0.1 (HAProxy on the host is the way in)")
    drain = int(flag(argv, "--drain-grace") or DRAIN_GRACE_DEFAULT) + int(flag(argv, "--drain-timeout") or DRAIN_TIMEOUT_DEFAULT)
    stop = svc.get("TimeoutStopSec", "90")
    if not stop.isdigit() or not int(stop) > drain:
        fail("llava-server@.service.in: TimeoutStopSec=%s is not above the drain (%ds)" % (stop, drain))
    envfiles = [v for k, v in t.get("Service", []) if k == "EnvironmentFile"]
    if "-/etc/default/llava-server" not in envfiles:
        fail("llava-server@.service.in: no EnvironmentFile=-/etc/default/llava-server")
    # The plain unit's hardening and restart policy, the same here.
    own = {"Environment", "EnvironmentFile", "ExecStart", "TimeoutStopSec"}
    for k, v in p.get("Service", []):
        if k not in own and svc.get(k) != v:
            fail("llava-server@.service.in: %s=%s where llava-server.service.in has %s" % (k, svc.get(k), v))
    # The shipped haproxy.cfg's replicas are the instances this serves.
    ports = re.findall(r"^\s*server r\d+ 127\.0\.0\.1:(\d+)", read(SHIPPED_CFG), re.M)
    if not ports:
        fail("deploy/haproxy/haproxy.cfg: no 127.0.0.1 server lines for llava-server@PORT")
    note("llava-server@.service.in: structure ok (instances %s for the shipped haproxy.cfg)"
         % " ".join("llava-server@" + x for x in sorted(set(ports))))

    analyze = shutil.which("systemd-analyze")
    if not analyze:
        note("systemd-analyze verify: skipped (not installed)")
        return
    # Offline: the paths filled into a temporary tree with a stand-in
    # executable, as make install would fill them; verify loads the template
    # for an instance name from the unit's own directory.
    with tempfile.TemporaryDirectory() as tmp:
        bindir = os.path.join(tmp, "bin")
        unitdir = os.path.join(tmp, "unit")
        os.makedirs(bindir)
        os.makedirs(unitdir)
        exe = os.path.join(bindir, "llava-server")
        with open(exe, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(exe, 0o755)
        filled = text
        for var, val in (("LLAVA_BIN_DIR", bindir), ("LLAVA_DEMO_DIR", tmp),
                         ("LLAVA_DOC_DIR", tmp), ("LLAVA_UNIT_DIR", unitdir)):
            filled = filled.replace("@%s@" % var, val)
        left = re.findall(r"@[A-Z_]+@", filled)
        if left:
            fail("llava-server@.service.in: @VARIABLE@s make install does not fill: %s" % sorted(set(left)))
        with open(os.path.join(unitdir, "llava-server@.service"), "w") as f:
            f.write(filled)
        r = subprocess.run([analyze, "verify", os.path.join(unitdir, "llava-server@8081.service")],
                           capture_output=True, text=True, timeout=30)
        out = (r.stdout + r.stderr).strip()
        if r.returncode != 0 or out:
            fail("systemd-analyze verify llava-server@8081.service:\n" + out)
        else:
            note("systemd-analyze verify llava-server@8081.service: ok")


def main():
    routes = server_get_routes()
    shipped_text, k8s_text = read(SHIPPED_CFG), read(K8S_CFG)
    shipped, k8s = cfg_sections(shipped_text), cfg_sections(k8s_text)
    objs = load_manifests()
    headless, mounts = check_k8s(objs, routes, k8s_text, k8s)
    check_kustomization(mounts)
    check_cfg_drift(shipped, k8s, headless)
    check_haproxy_c()
    check_systemd_template()
    if failures:
        print("test_deploy_files: %d failure(s)" % len(failures))
        return 1
    print("test_deploy_files: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
