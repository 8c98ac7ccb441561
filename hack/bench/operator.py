#!/usr/bin/env python3
"""Operator benchmark driver (called by hack/bench/operator.sh): talks to the real kube-apiserver of the
local stack with the standard library only. Prints a markdown section on stdout.

Measures, against the real shop-operator binary watching one fresh namespace:
  * time from creating 1 Shop to all its children existing (and to phase Available),
  * the same for 100 Shops created back to back,
  * operator RSS with 100 Shops reconciled,
  * API writes per minute at steady state (operator metrics) and objects changed in that minute.
Every loop is bounded by a deadline; only 127.0.0.1 is contacted."""
import json, os, ssl, subprocess, sys, time, urllib.request, urllib.error, uuid

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
KCFG = os.environ.get("SHOP_TEST_KUBECONFIG", os.path.join(ROOT, ".state/kubeconfig"))
BIN = os.environ.get("SHOP_OPERATOR_BIN", os.path.join(ROOT, "target/release/shop-operator"))
N_MANY = int(os.environ.get("SHOP_BENCH_SHOPS", "100"))
STEADY_SECS = int(os.environ.get("SHOP_BENCH_STEADY_SECS", "60"))
CHILDREN_PER_SHOP = 6 + 7 + 6 + 6 + 6  # Deployments, Services (+registry peers), ConfigMaps, SAs, NetworkPolicies

def kubeconfig():
    server = token = ca = None
    for line in open(KCFG):
        s = line.strip()
        if s.startswith("server:"): server = s.split(None, 1)[1]
        elif s.startswith("token:"): token = s.split(None, 1)[1]
        elif s.startswith("certificate-authority:"): ca = s.split(None, 1)[1]
    return server, token, ca

SERVER, TOKEN, CA = kubeconfig()
CTX = ssl.create_default_context(cafile=CA) if CA else ssl._create_unverified_context()

def api(method, path, body=None, ctype="application/json"):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(SERVER + path, data=data, method=method,
                                 headers={"Authorization": "Bearer " + TOKEN, "Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, context=CTX, timeout=30) as r:
            return json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{method} {path}: HTTP {e.code}: {e.read()[:300]!r}")

KINDS = [("apis/apps/v1", "deployments"), ("api/v1", "services"), ("api/v1", "configmaps"),
         ("api/v1", "serviceaccounts"), ("apis/networking.k8s.io/v1", "networkpolicies")]
SEL = "labelSelector=app.kubernetes.io%2Fmanaged-by%3Dshop-operator"

def children(ns):
    """Kind/name -> resourceVersion of every operator-managed object in ns."""
    out = {}
    for group, plural in KINDS:
        for o in api("GET", f"/{group}/namespaces/{ns}/{plural}?{SEL}")["items"]:
            out[f"{plural}/{o['metadata']['name']}"] = o["metadata"]["resourceVersion"]
    return out

def shop(name):
    return {"apiVersion": "shopkeeper.dev/v1alpha1", "kind": "Shop", "metadata": {"name": name},
            "spec": {"image": {"repository": "bench.local", "tag": "1.0.0"},
                     "backing": {"mysql": {"urlSecretRef": {"name": "db", "key": "url"}},
                                 "mongodb": {"urlSecretRef": {"name": "mongo", "key": "url"}},
                                 "kafka": {"bootstrapServers": "kafka:9092"}}}}

def wait(what, deadline_s, pred, interval=0.05):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if pred(): return True
        time.sleep(interval)
    raise SystemExit(f"timed out after {deadline_s}s waiting for {what}")

def phases(ns):
    return [s.get("status", {}).get("phase") for s in api("GET", f"/apis/shopkeeper.dev/v1alpha1/namespaces/{ns}/shops")["items"]]

def metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(name))

def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"): return int(line.split()[1])
    return 0

def run_case(port, ns, n, prefix):
    t0 = time.monotonic()
    for i in range(n):
        api("POST", f"/apis/shopkeeper.dev/v1alpha1/namespaces/{ns}/shops", shop(f"{prefix}{i}"))
    t_posted = time.monotonic() - t0
    want = n * CHILDREN_PER_SHOP
    wait(f"{want} children", 300, lambda: sum(1 for k in children(ns) if k.split("/")[1].startswith(prefix)) >= want,
         interval=0.05 if n == 1 else 0.25)
    t_children = time.monotonic() - t0
    wait(f"{n} Shops Available", 600, lambda: sum(1 for s in api("GET", f"/apis/shopkeeper.dev/v1alpha1/namespaces/{ns}/shops")["items"]
                                              if s["metadata"]["name"].startswith(prefix) and s.get("status", {}).get("phase") == "Available") >= n,
         interval=0.1 if n == 1 else 0.5)
    t_available = time.monotonic() - t0
    return t_posted, t_children, t_available

def main():
    if not os.path.exists(BIN): raise SystemExit(f"{BIN} not built: cargo build --release -p shop-operator")
    subprocess.run(["kubectl", "--kubeconfig", KCFG, "apply", "--server-side", "--force-conflicts",
                    "--field-manager=shop-bench", "-f", os.path.join(ROOT, "crds/shop.yaml")], check=True, capture_output=True)
    ns = "bench-op-" + uuid.uuid4().hex[:8]
    api("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    import socket
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    log = open(os.path.join(ROOT, ".state/logs", f"bench-operator-{ns}.log"), "w")
    env = dict(os.environ, KUBECONFIG=KCFG, RUST_LOG="warn")
    proc = subprocess.Popen([BIN, "run", "--watch-namespace", ns, "--admin-addr", f"127.0.0.1:{port}", "--log-format", "text"],
                            stdout=log, stderr=log, env=env)
    try:
        def ready():
            try: return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200
            except Exception: return False
        wait("operator /readyz", 30, ready, 0.1)
        rss_idle = rss_kib(proc.pid)
        one = run_case(port, ns, 1, "one-")
        many = run_case(port, ns, N_MANY, "many-")
        time.sleep(5)  # trailing Deployment status events settle
        rss_many = rss_kib(proc.pid)
        w0 = metric(port, "shop_operator_api_writes_total"); r0 = metric(port, "shop_operator_reconciles_total")
        rv0 = children(ns)
        time.sleep(STEADY_SECS)
        w1 = metric(port, "shop_operator_api_writes_total"); r1 = metric(port, "shop_operator_reconciles_total")
        rv1 = children(ns)
        changed = sum(1 for k, v in rv0.items() if rv1.get(k) != v)
        per_min = 60.0 / STEADY_SECS
        total_writes = metric(port, "shop_operator_api_writes_total")
    finally:
        proc.terminate()
        try: proc.wait(timeout=15)
        except subprocess.TimeoutExpired: proc.kill()
        try: api("DELETE", f"/api/v1/namespaces/{ns}")
        except SystemExit: pass
    print("## Operator (shop-operator)\n")
    print("Command: `hack/bench/operator.sh` — the release `shop-operator` binary on the host, watching one fresh namespace of the")
    print("local control plane (kube-apiserver + controller-manager + scheduler + kwok); Shops created through the API,")
    print(f"children counted by listing the {CHILDREN_PER_SHOP} managed objects per Shop every 50–250 ms. No peer operator is")
    print("named by the issue; the goal for steady-state writes is 0.\n")
    print("| measure | value |\n|---|---|")
    print(f"| 1 Shop: apply → all {CHILDREN_PER_SHOP} children exist | {one[1]*1000:.0f} ms |")
    print(f"| 1 Shop: apply → phase Available (kwok pods Ready) | {one[2]*1000:.0f} ms |")
    print(f"| {N_MANY} Shops: first apply → all {N_MANY*CHILDREN_PER_SHOP} children exist | {many[1]:.1f} s (creating the Shops took {many[0]:.1f} s) |")
    print(f"| {N_MANY} Shops: first apply → all Available | {many[2]:.1f} s |")
    print(f"| operator RSS idle / with {N_MANY + 1} Shops | {rss_idle/1024:.1f} MiB / {rss_many/1024:.1f} MiB |")
    print(f"| API writes per minute at steady state ({STEADY_SECS} s window) | {(w1-w0)*per_min:.1f} (reconciles: {(r1-r0)*per_min:.1f}/min) |")
    print(f"| managed objects changed during that window | {changed} of {len(rv0)} |")
    print(f"| total API writes for {N_MANY + 1} Shops (apply + status + delete) | {total_writes:.0f} |")
    print()

if __name__ == "__main__":
    main()
