#!/usr/bin/env python3
"""Cost of injection by annotation (deploy/injector/) on the single-node
cluster of `scripts/stack.sh up --cluster`; run by scripts/bench-injector.sh.
Prints markdown tables and writes target/bench/injector.json. Figures
only: nothing here asserts a speed.

1. API-server admission time per pod CREATE, from the API server's own
   metrics (apiserver_admission_controller_admission_duration_seconds, by
   admission controller, and ..._step_... for the whole mutating and
   validating steps): plain pods with no policy installed, then plain and
   annotated pods with deploy/injector/ installed. Dry-run creates: the
   whole admission chain runs, nothing is stored or scheduled, so no
   other CREATE (events) falls in the window; the count of CREATEs the
   metrics saw is printed beside, to show it.
2. Pod creation to Running (all containers ready), as the client sees it:
   an annotated pod injected by the API server, against the same pod with
   the same containers written by hand (the injected spec, read back from
   a dry run).

Knobs: BENCH_INJECTOR_ADMISSIONS (200) dry-run creates per row,
BENCH_INJECTOR_PODS (10) pods per kind; BENCH_FLEET=smoke makes both tiny.
"""

import json
import os
import ssl
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.environ.get("BENCH_FLEET") == "smoke"
ADMISSIONS = int(os.environ.get("BENCH_INJECTOR_ADMISSIONS", "20" if SMOKE else "200"))
PODS = int(os.environ.get("BENCH_INJECTOR_PODS", "1" if SMOKE else "10"))
NS = "bench-injector"
VERSION = next(l.split('"')[1] for l in open(os.path.join(ROOT, "Cargo.toml")) if l.startswith("version"))


def load_env():
    env = {}
    with open(os.path.join(os.environ["VK_STACK_DIR"], "env")) as f:
        for line in f:
            if line.startswith("export "):
                k, _, v = line[len("export "):].rstrip("\n").partition("=")
                env[k] = v
    return env


STACK = load_env()
SSL = ssl.create_default_context(cafile=STACK["VK_CA_CERT"])


def kube(method, path, body=None, ok=(200, 201, 202)):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(STACK["VK_KUBE_ADDR"] + path, data=data, method=method, headers={
        "Authorization": "Bearer " + STACK["VK_KUBE_ADMIN_TOKEN"], "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=SSL, timeout=30) as r:
            text = r.read()
            return json.loads(text) if text.startswith(b"{") else text.decode()
    except urllib.error.HTTPError as e:
        if e.code in ok:
            return None
        raise RuntimeError(f"{method} {path}: {e.code} {e.read()[:300]!r}") from None


def kubectl(*args):
    subprocess.run([STACK["VK_BIN"] + "/kubectl", "--kubeconfig", STACK["VK_KUBECONFIG"], *args],
                   check=True, stdout=subprocess.DEVNULL)


def metrics():
    """(sum seconds, count) of pod-independent admission histograms we use,
    keyed by (metric, name or type) for operation CREATE, not rejected."""
    out = {}
    for line in kube("GET", "/metrics").splitlines():
        for metric, key in [("apiserver_admission_controller_admission_duration_seconds", "name"),
                            ("apiserver_admission_step_admission_duration_seconds", "type")]:
            for suffix in ("_sum", "_count"):
                if not line.startswith(metric + suffix + "{"):
                    continue
                labels = dict(kv.split("=", 1) for kv in line[line.index("{") + 1:line.index("}")].split(","))
                labels = {k: v.strip('"') for k, v in labels.items()}
                if labels.get("operation") != "CREATE" or labels.get("rejected") != "false":
                    continue
                label = labels.get(key) if key == "type" else f"{labels.get('name')}/{labels.get('type')}"
                entry = out.setdefault((metric.split("_")[2], label), [0.0, 0])
                entry[0 if suffix == "_sum" else 1] += float(line.rsplit(" ", 1)[1])
    return out


def app(name="app"):
    return {"name": name, "image": STACK["VK_PAUSE_IMAGE"], "imagePullPolicy": "Never",
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}}}


def pod(name, annotations=None, spec=None):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": annotations or {}},
            "spec": spec or {
                "serviceAccountName": "app", "hostNetwork": True, "enableServiceLinks": False,
                "terminationGracePeriodSeconds": 5,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534,
                                    "fsGroup": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [app()]}}


ANNOTATED = {"vault-kubernetes.io/role": NS}


def admission(label, annotations):
    """Mean admission time per dry-run pod CREATE, by controller and step."""
    before = metrics()
    for i in range(ADMISSIONS):
        kube("POST", f"/api/v1/namespaces/{NS}/pods?dryRun=All", pod(f"dry-{i}", annotations))
    after = metrics()
    row = {"label": label, "n": ADMISSIONS}
    for key, (s, c) in after.items():
        s0, c0 = before.get(key, (0.0, 0))
        if c - c0 > 0:
            # Per pod: the plugin may run twice for one request (the
            # mutating step's reinvocation round), both count.
            row[f"{key[0]}:{key[1]}"] = {"ms": (s - s0) / ADMISSIONS * 1000, "count": int(c - c0)}
    return row


def until_running(name, deadline=120):
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        p = kube("GET", f"/api/v1/namespaces/{NS}/pods/{name}")
        statuses = p["status"].get("containerStatuses") or []
        if p["status"].get("phase") == "Running" and statuses and all(c.get("ready") for c in statuses):
            return
        time.sleep(0.05)
    raise RuntimeError(f"pod {name} not Running after {deadline}s")


def to_running(kinds):
    """Seconds from POST to Running, the kinds taking turns (a busy moment
    of the machine falls on both)."""
    times = {kind: [] for kind in kinds}
    for i in range(PODS):
        for kind, body in kinds.items():
            name = f"{kind}-{i}"
            body = json.loads(json.dumps(body))
            body["metadata"]["name"] = name
            start = time.monotonic()
            kube("POST", f"/api/v1/namespaces/{NS}/pods", body)
            until_running(name)
            times[kind].append(time.monotonic() - start)
            kube("DELETE", f"/api/v1/namespaces/{NS}/pods/{name}?gracePeriodSeconds=0")
    return [{"kind": kind, "n": PODS, "median_s": statistics.median(t), "max_s": max(t)}
            for kind, t in times.items()]


def setup():
    kube("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    kube("POST", f"/api/v1/namespaces/{NS}/serviceaccounts",
         {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app"}})
    kube("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": f"{NS}-delegator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
        "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": NS}]})
    env = dict(os.environ, VAULT_ADDR=STACK["VAULT_ADDR"], VAULT_TOKEN=STACK["VK_VAULT_ROOT_TOKEN"])
    subprocess.run([STACK["VK_BIN"] + "/bao", "write", f"auth/kubernetes/role/{NS}",
                    "bound_service_account_names=app", f"bound_service_account_namespaces={NS}",
                    "token_policies=vk-demo", "token_ttl=1h"], env=env, check=True, stdout=subprocess.DEVNULL)
    for _ in range(100):  # pods need the namespace's default token controller done
        try:
            kube("GET", f"/api/v1/namespaces/{NS}/serviceaccounts/app")
            break
        except RuntimeError:
            time.sleep(0.1)


def install_injector():
    d = os.path.join(ROOT, "deploy/injector")
    kubectl("apply", "--server-side", "-f", d)
    path = "/api/v1/namespaces/vault-kubernetes/configmaps/vault-kubernetes-injector"
    cm = kube("GET", path)
    image = lambda p: f"localhost/vault-kubernetes-{p}:{VERSION}"
    cm["data"].update({
        "vaultAddr": STACK["VAULT_ADDR"], "authenticatorImage": image("authenticator"),
        "tokenRenewerImage": image("token-renewer"), "synchronizerImage": image("synchronizer"),
        "imagePullPolicy": "Never", "kubernetesServiceHost": "127.0.0.1",
        "kubernetesServicePort": STACK["KUBERNETES_SERVICE_PORT"]})
    kube("PUT", path, cm)
    for _ in range(120):
        p = kube("POST", f"/api/v1/namespaces/{NS}/pods?dryRun=All", pod("probe", ANNOTATED))
        if p["metadata"]["annotations"].get("vault-kubernetes.io/status") == "injected":
            return p
        time.sleep(0.5)
    raise RuntimeError("the injector does not inject after 60s")


def main():
    setup()
    rows = [admission("plain pod, no policy installed", None)]
    injected = install_injector()
    rows.append(admission("plain pod, injector installed", None))
    rows.append(admission("annotated pod (authenticator + renewer)", ANNOTATED))
    rows.append(admission("annotated pod + files with interval (4 containers)",
                          dict(ANNOTATED, **{"vault-kubernetes.io/secrets": "secret/k8s/first,secret/k8s/folder/",
                                             "vault-kubernetes.io/secrets-interval": "1m"})))
    # The same containers written by hand: the injected spec, with the
    # status annotation and the ServiceAccount plugin's volume removed.
    hand = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": injected["spec"]}
    spec = hand["spec"]
    spec["volumes"] = [v for v in spec["volumes"] if not v["name"].startswith("kube-api-access-")]
    for c in spec["containers"] + spec["initContainers"]:
        c["volumeMounts"] = [m for m in c["volumeMounts"] if not m["name"].startswith("kube-api-access-")]
    for k in ("nodeName",):
        spec.pop(k, None)
    # Warm the images and the node once, unmeasured.
    to_running_warm = dict(pod("warm", ANNOTATED))
    kube("POST", f"/api/v1/namespaces/{NS}/pods", to_running_warm)
    until_running("warm")
    kube("DELETE", f"/api/v1/namespaces/{NS}/pods/warm?gracePeriodSeconds=0")
    running = to_running({"injected": pod("x", ANNOTATED), "hand-written": hand})

    print("\n### Injection by annotation: API-server admission time per pod CREATE (dry run, mean per pod)\n")
    print("| pods | n | MutatingAdmissionPolicy | ValidatingAdmissionPolicy | whole mutating step | whole validating step |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cell = lambda k: (f"{r[k]['ms']:.2f} ms ({r[k]['count']})" if k in r else "-")
        print(f"| {r['label']} | {r['n']} | {cell('controller:MutatingAdmissionPolicy/admit')} "
              f"| {cell('controller:ValidatingAdmissionPolicy/validate')} | {cell('step:admit')} | {cell('step:validate')} |")
    print("\n(In brackets: the calls the metrics counted in the window; the mutating step runs a policy plugin again,"
          " in its reinvocation round, after a mutation.)")
    print("\n### Pod creation to Running (all containers ready), as the client sees it\n")
    print("| pod | n | median | max |\n|---|---|---|---|")
    for r in running:
        print(f"| {r['kind']} (authenticator, renewer native sidecar, pause app) | {r['n']} "
              f"| {r['median_s']:.2f} s | {r['max_s']:.2f} s |")
    os.makedirs(os.path.join(ROOT, "target/bench"), exist_ok=True)
    with open(os.path.join(ROOT, "target/bench/injector.json"), "w") as f:
        json.dump({"admission": rows, "to_running": running}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
