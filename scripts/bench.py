#!/usr/bin/env python3
"""Benchmarks of vault-kubernetes against `bao agent` (Vault Agent) on the
local stack, side by side in one run. Prints markdown tables and writes
target/bench/results.json. Figures only: nothing here asserts a speed.

Run through scripts/bench.sh, which builds and starts what this needs.
Knobs: BENCH_RUNS (5), BENCH_SIDECAR_SECONDS (60), BENCH_SIDECAR_TTL (15s),
BENCH_SIZES (10,100,1000).
"""

import json
import os
import platform
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = os.path.join(ROOT, "target/x86_64-unknown-linux-musl/release")
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
SIDECAR_SECONDS = int(os.environ.get("BENCH_SIDECAR_SECONDS", "60"))
SIDECAR_TTL = os.environ.get("BENCH_SIDECAR_TTL", "15s")
SIZES = [int(x) for x in os.environ.get("BENCH_SIZES", "10,100,1000").split(",") if x]


def load_env():
    path = os.path.join(os.environ.get("VK_STACK_DIR", os.path.join(ROOT, "target/stack")), "env")
    env = {}
    with open(path) as f:
        for line in f:
            if line.startswith("export "):
                k, _, v = line[len("export "):].rstrip("\n").partition("=")
                env[k] = v
    return env


STACK = load_env()
TMP = tempfile.mkdtemp(prefix="vk-bench-")
KUBE_SSL = ssl.create_default_context(cafile=STACK["VK_CA_CERT"])


def http(base, method, path, body=None, headers=None, context=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers or {})
    if data:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, context=context, timeout=30) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def vault(method, path, body=None):
    return http(STACK["VAULT_ADDR"], method, "/v1/" + path, body, {"X-Vault-Token": STACK["VK_VAULT_ROOT_TOKEN"]})


def kube(method, path, body=None):
    return http(STACK["VK_KUBE_ADDR"], method, path, body,
                {"Authorization": "Bearer " + STACK["VK_KUBE_ADMIN_TOKEN"]}, KUBE_SSL)


def measure(cmd, env):
    """Runs a process to its end: (wall seconds, peak RSS KiB, exit code).

    Peak RSS comes from GNU time: a child forked from this Python process
    would count Python's own pages from before exec in its maximum.
    """
    out = os.path.join(TMP, "time.out")
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out] + cmd, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.decode(errors="replace"))
        raise SystemExit(f"{cmd[0]} exited {proc.returncode}")
    with open(out) as f:
        rss = int(f.read().split()[-1])
    return wall, rss, proc.returncode


def pod_env(**extra):
    env = {
        "VAULT_ADDR": STACK["VAULT_ADDR"],
        "VAULT_ROLE": "demo",
        "SERVICE_ACCOUNT_TOKEN_PATH": STACK["SERVICE_ACCOUNT_TOKEN_PATH"],
        "KUBERNETES_SERVICE_HOST": STACK["KUBERNETES_SERVICE_HOST"],
        "KUBERNETES_SERVICE_PORT": STACK["KUBERNETES_SERVICE_PORT"],
        "KUBERNETES_SERVICEACCOUNT_DIR": STACK["KUBERNETES_SERVICEACCOUNT_DIR"],
    }
    env.update(extra)
    return env


def agent_config(name, role, exit_after_auth):
    sink = os.path.join(TMP, f"{name}-token")
    path = os.path.join(TMP, f"{name}.hcl")
    with open(path, "w") as f:
        f.write(f"""
vault {{ address = "{STACK['VAULT_ADDR']}" }}
exit_after_auth = {str(exit_after_auth).lower()}
auto_auth {{
  method "kubernetes" {{
    mount_path = "auth/kubernetes"
    config = {{
      role = "{role}"
      token_path = "{STACK['SERVICE_ACCOUNT_TOKEN_PATH']}"
    }}
  }}
  sink "file" {{
    config = {{ path = "{sink}" }}
  }}
}}
""")
    return path, sink


def agent_cmd(config):
    return [os.path.join(STACK["VK_BIN"], "bao"), "agent", "-log-level=error", f"-config={config}"]


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def time_to_token():
    ours_token = os.path.join(TMP, "ours-token")
    config, sink = agent_config("init", "demo", True)
    rows = {"ours_wall": [], "ours_rss": [], "peer_wall": [], "peer_rss": [], "ratio": []}
    for _ in range(RUNS):
        for f in (ours_token, sink):
            if os.path.exists(f):
                os.remove(f)
        w1, r1, _ = measure([os.path.join(OURS, "vault-kubernetes-authenticator")], pod_env(VAULT_TOKEN_PATH=ours_token))
        w2, r2, _ = measure(agent_cmd(config), {"PATH": "/usr/bin:/bin"})
        assert os.path.getsize(ours_token) > 0 and os.path.getsize(sink) > 0
        rows["ours_wall"].append(w1)
        rows["ours_rss"].append(r1)
        rows["peer_wall"].append(w2)
        rows["peer_rss"].append(r2)
        rows["ratio"].append(w1 / w2)
    return {k: median(v) for k, v in rows.items()} | {"runs": RUNS}


def proc_stats(pid):
    status = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            status[k] = v.strip()
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    voluntary = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches"):
                    voluntary += int(line.split()[1])
    return {
        "rss_kib": int(status["VmRSS"].split()[0]),
        "peak_rss_kib": int(status["VmHWM"].split()[0]),
        "threads": int(status["Threads"]),
        "cpu_s": (int(fields[11]) + int(fields[12])) / ticks,
        "voluntary_ctx": voluntary,
    }


def sidecar():
    vault("POST", "auth/kubernetes/role/bench-short", {
        "bound_service_account_names": [STACK["VK_SERVICE_ACCOUNT"]],
        "bound_service_account_namespaces": [STACK["VK_NAMESPACE"]],
        "token_policies": ["vk-demo"], "token_ttl": SIDECAR_TTL, "token_max_ttl": "24h"})
    ours_token = os.path.join(TMP, "sidecar-token")
    env = pod_env(VAULT_TOKEN_PATH=ours_token, VAULT_ROLE="bench-short")
    measure([os.path.join(OURS, "vault-kubernetes-authenticator")], env)
    ours = subprocess.Popen([os.path.join(OURS, "vault-kubernetes-token-renewer")],
                            env=env | {"VAULT_REAUTH": "true"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    config, _ = agent_config("sidecar", "bench-short", False)
    peer = subprocess.Popen(agent_cmd(config), env={"PATH": "/usr/bin:/bin"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(SIDECAR_SECONDS)
    result = {"ours": proc_stats(ours.pid), "peer": proc_stats(peer.pid), "seconds": SIDECAR_SECONDS, "ttl": SIDECAR_TTL}
    for p in (ours, peer):
        p.terminate()
    out = ours.communicate(timeout=10)[1].decode()
    peer.wait(timeout=10)
    result["ours"]["renewals"] = out.count("token renewed")
    return result


def sizes():
    out = {
        "authenticator": os.path.getsize(os.path.join(OURS, "vault-kubernetes-authenticator")),
        "synchronizer": os.path.getsize(os.path.join(OURS, "vault-kubernetes-synchronizer")),
        "token-renewer": os.path.getsize(os.path.join(OURS, "vault-kubernetes-token-renewer")),
        "bao": os.path.getsize(os.path.realpath(os.path.join(STACK["VK_BIN"], "bao"))),
        "images": {},
    }
    try:
        listing = subprocess.run(["buildah", "--storage-driver=vfs", "images", "--format", "{{.Name}} {{.Size}}"],
                                 capture_output=True, text=True, check=True).stdout
        for line in listing.splitlines():
            name, _, size = line.partition(" ")
            if "vault-kubernetes-" in name:
                out["images"][name.rsplit("vault-kubernetes-", 1)[1]] = size
    except (OSError, subprocess.CalledProcessError):
        pass
    return out


def count_lines(path, start, predicate):
    n = 0
    with open(path, "rb") as f:
        f.seek(start)
        for line in f:
            try:
                if predicate(json.loads(line)):
                    n += 1
            except ValueError:
                pass
    return n


def sync_scale():
    token = os.path.join(TMP, "sync-token")
    measure([os.path.join(OURS, "vault-kubernetes-authenticator")], pod_env(VAULT_TOKEN_PATH=token))
    sa_user = f"system:serviceaccount:{STACK['VK_NAMESPACE']}:{STACK['VK_SERVICE_ACCOUNT']}"
    vault_log, kube_log = STACK["VK_VAULT_AUDIT_LOG"], STACK["VK_KUBE_AUDIT_LOG"]
    results = []
    for n in SIZES:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: vault("POST", f"secret/data/k8s/bench-{n}/s{i}",
                                          {"data": {"user": f"user{i}", "password": f"pw-{i}"}}), range(n)))
        env = pod_env(VAULT_TOKEN_PATH=token, VAULT_SECRETS=f"secret/k8s/bench-{n}/",
                      SECRET_PREFIX=f"b{n}-", SYNCHRONIZER_LABELS=f"bench=n{n}")
        row = {"secrets": n}
        for phase in ("first", "noop"):
            time.sleep(1.5)  # let the API server's batched audit log settle
            v0, k0 = os.path.getsize(vault_log), os.path.getsize(kube_log)
            wall, rss, _ = measure([os.path.join(OURS, "vault-kubernetes-synchronizer")], env)
            time.sleep(2.5)
            kube_events = lambda verbs: count_lines(kube_log, k0, lambda e: e.get("stage") == "ResponseComplete"
                                                    and e.get("user", {}).get("username") == sa_user
                                                    and e.get("verb") in verbs)
            row[phase] = {
                "wall_s": wall, "peak_rss_kib": rss,
                "vault_requests": count_lines(vault_log, v0, lambda e: e.get("type") == "response"),
                "kube_requests": kube_events({"get", "list", "create", "update", "patch", "delete"}),
                "kube_writes": kube_events({"create", "update", "patch", "delete"}),
                "kube_lists": kube_events({"list"}),
            }
        results.append(row)
    return results


def versions():
    def first_line(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0].strip()
        except (OSError, IndexError):
            return "?"
    return {
        "cores": os.cpu_count(), "kernel": platform.release(),
        "ours": first_line([os.path.join(OURS, "vault-kubernetes-authenticator"), "--version"]),
        "bao": first_line([os.path.join(STACK["VK_BIN"], "bao"), "version"]),
        # Built from the module proxy without version stamping: the cache path names it.
        "kube-apiserver": os.path.basename(os.path.dirname(os.path.realpath(os.path.join(STACK["VK_BIN"], "kube-apiserver")))),
    }


def mib(kib):
    return f"{kib / 1024:.1f} MiB"


def report(r):
    v = r["machine"]
    print(f"Machine: {v['cores']} cores, Linux {v['kernel']}; {v['ours']}; {v['bao']}; {v['kube-apiserver']}\n")
    t = r["time_to_token"]
    print(f"### Time to token (init container, Kubernetes auth, median of {t['runs']})\n")
    print("| | ours | bao agent | ours/peer |\n|---|---|---|---|")
    print(f"| wall time | {t['ours_wall']*1000:.0f} ms | {t['peer_wall']*1000:.0f} ms | {t['ratio']:.2f} |")
    print(f"| peak RSS | {mib(t['ours_rss'])} | {mib(t['peer_rss'])} | {t['ours_rss']/t['peer_rss']:.3f} |\n")
    s = r["sidecar"]
    o, p = s["ours"], s["peer"]
    print(f"### Sidecar for {s['seconds']} s on a {s['ttl']} TTL token (ours: {o['renewals']} renewals)\n")
    print("| | ours | bao agent | ours/peer |\n|---|---|---|---|")
    for key, label, fmt in [("rss_kib", "RSS at end", mib), ("peak_rss_kib", "peak RSS", mib),
                            ("cpu_s", "CPU time", lambda x: f"{x:.2f} s"),
                            ("voluntary_ctx", "voluntary context switches", str), ("threads", "threads", str)]:
        ratio = o[key] / p[key] if p[key] else float("nan")
        print(f"| {label} | {fmt(o[key])} | {fmt(p[key])} | {ratio:.3f} |")
    z = r["size"]
    print("\n### Size\n\n| | binary | image |\n|---|---|---|")
    for name in ("authenticator", "synchronizer", "token-renewer"):
        print(f"| {name} | {z[name]/1e6:.2f} MB | {z['images'].get(name, '-')} |")
    print(f"| bao (agent and server) | {z['bao']/1e6:.1f} MB | - |")
    print("\n### Synchronizer scale (one folder of N KV v2 secrets)\n")
    print("| N | run | wall | peak RSS | Vault requests | Kubernetes requests | Kubernetes writes | list calls |")
    print("|---|---|---|---|---|---|---|---|")
    for row in r["sync"]:
        for phase in ("first", "noop"):
            x = row[phase]
            print(f"| {row['secrets']} | {'first sync' if phase == 'first' else 'no-op resync'} | {x['wall_s']*1000:.0f} ms "
                  f"| {mib(x['peak_rss_kib'])} | {x['vault_requests']} | {x['kube_requests']} | {x['kube_writes']} | {x['kube_lists']} |")


def main():
    results = {"machine": versions(), "time_to_token": time_to_token(), "size": sizes(),
               "sync": sync_scale(), "sidecar": sidecar()}
    os.makedirs(os.path.join(ROOT, "target/bench"), exist_ok=True)
    with open(os.path.join(ROOT, "target/bench/results.json"), "w") as f:
        json.dump(results, f, indent=2)
    report(results)


if __name__ == "__main__":
    main()
