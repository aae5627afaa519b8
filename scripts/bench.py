#!/usr/bin/env python3
"""Benchmarks of vault-kubernetes against `bao agent` (Vault Agent) on the
local stack, side by side in one run. Prints markdown tables and writes
target/bench/results.json. Figures only: nothing here asserts a speed.

Run through scripts/bench.sh, which builds and starts what this needs.
Knobs: BENCH_RUNS (5), BENCH_SIDECAR_SECONDS (60), BENCH_SIDECAR_TTL (15s),
BENCH_SIZES (10,100,1000); fleet tables: BENCH_STORM_SIZES (50,200,500),
BENCH_STORM_AGENT (50), BENCH_STORM_429 (200: authenticators behind a Vault
answering 429 to BENCH_STORM_429_SHARE, 0.5, of logins), BENCH_DENSITY_SIZES
(50,200), BENCH_DENSITY_AGENT (20), BENCH_DENSITY_SECONDS (90),
BENCH_SYNC_K (1,20), BENCH_SYNC_S (10,200), BENCH_SYNC_INTERVAL (10),
BENCH_SYNC_SECONDS (40), BENCH_FLOOR_RUNS (20). A size of 0 skips a row;
BENCH_FLEET=smoke makes all of these tiny (CI).
"""

import json
import os
import platform
import random
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
    """Bytes of each static binary and buildah's size of each image, for
    amd64 (the top-level keys and "images", as before) and arm64."""
    arm64 = os.path.join(ROOT, "target/aarch64-unknown-linux-musl/release")
    programs = ("authenticator", "synchronizer", "token-renewer")
    out = {p: os.path.getsize(os.path.join(OURS, f"vault-kubernetes-{p}")) for p in programs}
    out["arm64"] = {p: os.path.getsize(os.path.join(arm64, f"vault-kubernetes-{p}")) for p in programs}
    out["bao"] = os.path.getsize(os.path.realpath(os.path.join(STACK["VK_BIN"], "bao")))
    out["images"], out["images_arm64"] = {}, {}
    try:
        listing = subprocess.run(["buildah", "--storage-driver=vfs", "images", "--format",
                                  "{{.Name}}:{{.Tag}} {{.Size}}"],
                                 capture_output=True, text=True, check=True).stdout
        for line in listing.splitlines():
            name, _, size = line.partition(" ")
            size = size.strip()  # buildah pads the column
            if "vault-kubernetes-" not in name:
                continue
            program, _, tag = name.rsplit("vault-kubernetes-", 1)[1].partition(":")
            # build-images.sh: <version> is amd64, <version>-arm64 arm64;
            # -amd64 repeats the first, -multiarch is the list of both.
            if tag.endswith("-arm64"):
                out["images_arm64"][program] = size
            elif not tag.endswith(("-amd64", "-multiarch")):
                out["images"][program] = size
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
    print("\n### Size\n\n| | amd64 binary | amd64 image | arm64 binary | arm64 image |\n|---|---|---|---|---|")
    for name in ("authenticator", "synchronizer", "token-renewer"):
        print(f"| {name} | {z[name]/1e6:.2f} MB | {z['images'].get(name, '-')} "
              f"| {z['arm64'][name]/1e6:.2f} MB | {z['images_arm64'].get(name, '-')} |")
    print(f"| bao (agent and server) | {z['bao']/1e6:.1f} MB | - | - | - |")
    print("\n### Synchronizer scale (one folder of N KV v2 secrets)\n")
    print("| N | run | wall | peak RSS | Vault requests | Kubernetes requests | Kubernetes writes | list calls |")
    print("|---|---|---|---|---|---|---|---|")
    for row in r["sync"]:
        for phase in ("first", "noop"):
            x = row[phase]
            print(f"| {row['secrets']} | {'first sync' if phase == 'first' else 'no-op resync'} | {x['wall_s']*1000:.0f} ms "
                  f"| {mib(x['peak_rss_kib'])} | {x['vault_requests']} | {x['kube_requests']} | {x['kube_writes']} | {x['kube_lists']} |")

# ---- Fleet tables: many processes at once against one stack ------------------
# Every loop below is bounded: processes get LOGIN_TIMEOUT or a SIGTERM at the
# end of a fixed window, and a watchdog kills what is left after a deadline.


def knob_sizes(name, value):
    """A comma-separated list of sizes; 0 or nothing skips."""
    return [int(x) for x in value.split(",") if x.strip() and int(x) > 0]


# BENCH_FLEET=smoke: tiny sizes for CI (well under 2 minutes); each knob
# below still overrides.
SMOKE = os.environ.get("BENCH_FLEET") == "smoke"


def knob(name, full, smoke):
    return os.environ.get(name, smoke if SMOKE else full)


STORM_SIZES = knob_sizes("BENCH_STORM_SIZES", knob("BENCH_STORM_SIZES", "50,200,500", "10"))
STORM_AGENT = int(knob("BENCH_STORM_AGENT", "50", "3"))
STORM_429 = int(knob("BENCH_STORM_429", "200", "10"))
STORM_429_SHARE = float(knob("BENCH_STORM_429_SHARE", "0.5", "0.3"))
DENSITY_SIZES = knob_sizes("BENCH_DENSITY_SIZES", knob("BENCH_DENSITY_SIZES", "50,200", "5"))
DENSITY_AGENT = int(knob("BENCH_DENSITY_AGENT", "20", "2"))
DENSITY_SECONDS = int(knob("BENCH_DENSITY_SECONDS", "90", "5"))
SYNC_K = knob_sizes("BENCH_SYNC_K", knob("BENCH_SYNC_K", "1,20", "1,2"))
SYNC_S = knob_sizes("BENCH_SYNC_S", knob("BENCH_SYNC_S", "10,200", "5"))
SYNC_INTERVAL = int(knob("BENCH_SYNC_INTERVAL", "10", "2"))
SYNC_SECONDS = int(knob("BENCH_SYNC_SECONDS", "40", "4"))
FLOOR_RUNS = int(knob("BENCH_FLOOR_RUNS", "20", "3"))
# Each renewer holds one inotify instance and a user may hold 128, shared
# by everything root runs on this machine: sidecars run as these otherwise
# unused uids, at most PER_UID each.
FLEET_UIDS = range(61000, 61020)
PER_UID = 100
LOGIN_PATH = "auth/kubernetes/login"


def percentile(xs, p):
    """Nearest-rank percentile; NaN for no values."""
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[max(0, min(len(xs) - 1, int(round(p / 100 * len(xs) + 0.5)) - 1))]


def server_pids():
    pids = {}
    for name in ("openbao", "kube-apiserver"):
        with open(os.path.join(STACK["VK_STACK_DIR"], f"{name}.pid")) as f:
            pids[name] = int(f.read())
    return pids


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_precise(pid):
    """CPU seconds of a process's live threads in nanoseconds' precision:
    /proc/PID/stat counts 10 ms ticks, more than an idle sidecar uses in
    minutes. Threads that already ended are not counted."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass  # the thread ended since the listing
    return total / 1e9


class CpuSampler:
    """CPU of the servers while a load runs: total seconds and the peak
    share of one core over any 0.5 s (clock ticks are 10 ms)."""

    def __init__(self, period=0.5):
        self.pids = server_pids()
        self.period = period
        self.peak = dict.fromkeys(self.pids, 0.0)
        self.first = {n: cpu_seconds(p) for n, p in self.pids.items()}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        last, t = dict(self.first), time.perf_counter()
        while not self.stopped.wait(self.period):
            now = time.perf_counter()
            for name, pid in self.pids.items():
                c = cpu_seconds(pid)
                self.peak[name] = max(self.peak[name], (c - last[name]) / (now - t))
                last[name] = c
            t = now

    def stop(self):
        self.stopped.set()
        self.thread.join()
        return {n: {"peak_core_pct": self.peak[n] * 100, "cpu_s": cpu_seconds(p) - self.first[n]}
                for n, p in self.pids.items()}


def audit_events(path, start):
    with open(path, "rb") as f:
        f.seek(start)
        for line in f:
            try:
                yield json.loads(line)
            except ValueError:
                pass


def epoch(stamp):
    """RFC 3339 UTC with any number of fraction digits (OpenBao writes 9)."""
    whole, _, frac = stamp.rstrip("Z").partition(".")
    return time.mktime(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) - time.timezone + float("0." + (frac or "0"))


def vault_logins(start, since):
    """Login responses in OpenBao's audit log from byte start, time since."""
    return sum(1 for e in audit_events(STACK["VK_VAULT_AUDIT_LOG"], start)
               if e.get("type") == "response" and e.get("request", {}).get("path") == LOGIN_PATH
               and epoch(e.get("time", "1970-01-01T00:00:00Z")) >= since)


def token_reviews(start, since):
    """TokenReviews in the API server's audit log (written in batches, so
    the byte offset alone could count a late line of an earlier phase)."""
    return sum(1 for e in audit_events(STACK["VK_KUBE_AUDIT_LOG"], start)
               if e.get("stage") == "ResponseComplete" and e.get("objectRef", {}).get("resource") == "tokenreviews"
               and epoch(e.get("requestReceivedTimestamp", "1970-01-01T00:00:00Z")) >= since)


def run_gated(cmds, deadline_s, log_path):
    """Starts every (argv, env) blocked on one pipe, then closes the pipe so
    all start at the same moment (N pods of a rollout). Returns, per process,
    (seconds from release to exit, exit code, CPU seconds).
    A watchdog SIGKILLs what still runs after deadline_s (exit code -9)."""
    gate_r, gate_w = os.pipe()
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    pids = []
    for argv, env in cmds:
        pids.append(os.posix_spawn("/bin/sh", ["sh", "-c", 'read _; exec "$@"', "sh"] + argv, env, file_actions=[
            (os.POSIX_SPAWN_DUP2, gate_r, 0),
            (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, log_fd, 2)]))
    os.close(gate_r)
    os.close(log_fd)
    time.sleep(0.5 + len(cmds) / 500)  # let every shell reach its read
    done = {}
    t0 = time.perf_counter()
    os.close(gate_w)

    def watchdog():
        for pid in pids:
            if pid not in done:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
    timer = threading.Timer(deadline_s, watchdog)
    timer.start()
    while len(done) < len(pids):
        pid, status, ru = os.wait4(-1, 0)
        done[pid] = (time.perf_counter() - t0, os.waitstatus_to_exitcode(status), ru.ru_utime + ru.ru_stime)
    timer.cancel()
    return [done[p] for p in pids]


def storm_row(name, cmds, sinks, log_path, deadline_s=90):
    """One storm: its processes' outcome, and what OpenBao and the API server saw."""
    v0, k0 = os.path.getsize(STACK["VK_VAULT_AUDIT_LOG"]), os.path.getsize(STACK["VK_KUBE_AUDIT_LOG"])
    since = time.time()
    sampler = CpuSampler()
    results = run_gated(cmds, deadline_s, log_path)
    servers = sampler.stop()
    time.sleep(2.5)  # the API server's audit log is written in batches of 1 s
    ok = [r for r, sink in zip(results, sinks) if r[1] == 0 and os.path.exists(sink) and os.path.getsize(sink) > 0]
    times = [r[0] for r in ok]
    with open(log_path, "rb") as f:
        errors = sorted({line.decode(errors="replace").split(" ", 2)[-1].strip()[:160]
                         for line in f if b"error" in line.lower()})
    return {
        "who": name, "n": len(cmds), "ok": len(ok),
        "p50_ms": percentile(times, 50) * 1000, "p95_ms": percentile(times, 95) * 1000,
        "p99_ms": percentile(times, 99) * 1000, "max_ms": max(times, default=float("nan")) * 1000,
        "vault_logins": vault_logins(v0, since), "token_reviews": token_reviews(k0, since),
        "cpu_s": sum(r[2] for r in results),
        "servers": servers, "errors": errors[:3],
    }


def ours_storm_cmds(n, tag, base=TMP, **extra):
    d = tempfile.mkdtemp(prefix=f"storm-{tag}-", dir=base)
    sinks = [os.path.join(d, f"t{i}") for i in range(n)]
    cmds = [([os.path.join(OURS, "vault-kubernetes-authenticator")],
             pod_env(VAULT_TOKEN_PATH=sink, LOGIN_TIMEOUT="60s", **extra)) for sink in sinks]
    return cmds, sinks, os.path.join(d, "stderr.log")


def agent_storm_cmds(n):
    cmds, sinks = [], []
    for i in range(n):
        config, sink = agent_config(f"storm-agent-{i}", "demo", True)
        cmds.append((agent_cmd(config), {"PATH": "/usr/bin:/bin"}))
        sinks.append(sink)
    return cmds, sinks, os.path.join(TMP, "storm-agent.log")


class Throttle:
    """A loopback proxy in front of OpenBao that answers 429 to a share of
    logins (as a Vault rate-limit quota would, without Retry-After) and
    records when each request arrived."""

    def __init__(self, share):
        upstream = STACK["VAULT_ADDR"].removeprefix("http://")
        host, _, port = upstream.rpartition(":")
        self.arrivals = []  # (perf_counter, throttled); list.append is atomic
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                throttled = self.path.endswith("/login") and random.random() < share
                outer.arrivals.append((time.perf_counter(), throttled))
                if throttled:
                    status, data = 429, b'{"errors":["request path \\"auth/kubernetes/login\\": rate limit quota exceeded"]}'
                else:
                    conn = HTTPConnection(host, int(port), timeout=60)
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                    conn.request("POST", self.path, body, headers)
                    resp = conn.getresponse()
                    status, data = resp.status, resp.read()
                    conn.close()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 1024  # the default 5 drops a storm's SYNs

        self.server = Server(("127.0.0.1", 0), Handler)
        self.addr = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def storm():
    rows = []
    for n in STORM_SIZES:
        rows.append(storm_row("ours", *ours_storm_cmds(n, f"n{n}")))
    # Each token file costs two fsyncs and a rename in one directory: on
    # one disk these queue behind the file system's journal. With medium
    # Memory (tmpfs) they cost nothing; this row tells the two apart.
    if STORM_SIZES and os.access("/dev/shm", os.W_OK):
        shm = tempfile.mkdtemp(prefix="vk-bench-", dir="/dev/shm")
        try:
            rows.append(storm_row("ours, token files on tmpfs", *ours_storm_cmds(max(STORM_SIZES), "shm", shm)))
        finally:
            subprocess.run(["rm", "-rf", shm], check=False)
    if STORM_AGENT:
        rows.append(storm_row("bao agent", *agent_storm_cmds(STORM_AGENT)))
    throttled = None
    if STORM_429:
        proxy = Throttle(STORM_429_SHARE)
        try:
            cmds, sinks, log_path = ours_storm_cmds(STORM_429, "429", VAULT_ADDR=proxy.addr)
            t0 = time.perf_counter()
            row = storm_row("ours, 429", cmds, sinks, log_path)
        finally:
            proxy.close()
        # Arrivals per 250 ms from the release (the gate opens ~0.5 s after t0).
        first = min((t for t, _ in proxy.arrivals), default=t0)
        buckets = [0] * (1 + int((max((t for t, _ in proxy.arrivals), default=first) - first) / 0.25))
        for t, _ in proxy.arrivals:
            buckets[int((t - first) / 0.25)] += 1
        row |= {"share": STORM_429_SHARE, "attempts": len(proxy.arrivals),
                "throttled": sum(1 for _, th in proxy.arrivals if th), "per_250ms": buckets}
        throttled = row
    return {"rows": rows, "throttled": throttled}


def snapshot(pid):
    """RSS, PSS, CPU and context switches (all threads) of one process."""
    out = {"cpu_s": cpu_precise(pid), "ctx": 0}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss_kib"] = int(line.split()[1])
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                out["pss_kib"] = int(line.split()[1])
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        out["ctx"] += int(line.split()[1])
        except OSError:
            pass  # the thread ended since the listing
    return out


def snapshots(procs, among=None):
    """Snapshots of the processes still running (and in among, by pid)."""
    out = {}
    for p in procs:
        if p.poll() is None and (among is None or p.pid in among):
            try:
                out[p.pid] = snapshot(p.pid)
            except OSError:
                pass  # ended since poll()
    return out


def hold(name, procs, sinks, m):
    """Measures running sidecars over DENSITY_SECONDS, then stops them."""
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and not all(os.path.exists(s) for s in sinks):
            time.sleep(0.2)
        time.sleep(2)
        v0 = os.path.getsize(STACK["VK_VAULT_AUDIT_LOG"])
        before = snapshots(procs)
        t0 = time.perf_counter()
        time.sleep(DENSITY_SECONDS)
        seconds = time.perf_counter() - t0
        after = snapshots(procs, before)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    vault_requests = sum(1 for e in audit_events(STACK["VK_VAULT_AUDIT_LOG"], v0) if e.get("type") == "response")
    rss = sum(a["rss_kib"] for a in after.values())
    pss = sum(a["pss_kib"] for a in after.values())
    alive = len(after)
    return {
        "who": name, "m": m, "alive": alive, "seconds": seconds, "rss_kib": rss, "pss_kib": pss,
        "cpu_s": sum(a["cpu_s"] - before[p]["cpu_s"] for p, a in after.items()),
        "wakeups_per_s": sum(a["ctx"] - before[p]["ctx"] for p, a in after.items()) / seconds,
        "threads": sum(a["threads"] for a in after.values()),
        "vault_rps": vault_requests / seconds,
        "per_gib_rss": alive * 1024 * 1024 / rss if rss else 0, "per_gib_pss": alive * 1024 * 1024 / pss if pss else 0,
    }


def density_ours(m, sa_token):
    base = tempfile.mkdtemp(prefix=f"density-{m}-", dir=TMP)
    os.chmod(base, 0o755)
    dirs, sinks, cmds = [], [], []
    for i in range(m):
        uid = FLEET_UIDS[i // PER_UID]
        d = os.path.join(base, str(i))
        os.mkdir(d, 0o700)
        os.chown(d, uid, uid)
        dirs.append((d, uid))
        sinks.append(os.path.join(d, "token"))
        cmds.append(([os.path.join(OURS, "vault-kubernetes-authenticator")],
                     pod_env(VAULT_TOKEN_PATH=sinks[-1], VAULT_ROLE="bench-short", LOGIN_TIMEOUT="60s",
                             SERVICE_ACCOUNT_TOKEN_PATH=sa_token, VAULT_TOKEN_FILE_OWNER=f"{uid}:{uid}")))
    run_gated(cmds, 90, os.path.join(base, "auth.log"))
    log = open(os.path.join(base, "renewer.log"), "ab")
    procs = []
    try:
        for (d, uid), sink in zip(dirs, sinks):
            env = pod_env(VAULT_TOKEN_PATH=sink, VAULT_ROLE="bench-short", VAULT_REAUTH="true",
                          SERVICE_ACCOUNT_TOKEN_PATH=sa_token)
            procs.append(subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                                           os.path.join(OURS, "vault-kubernetes-token-renewer")],
                                          env=env, stdout=subprocess.DEVNULL, stderr=log))
    except BaseException:
        for p in procs:
            p.kill()
        raise
    row = hold("ours", procs, sinks, m)
    log.close()
    with open(os.path.join(base, "renewer.log"), "rb") as f:
        text = f.read().decode(errors="replace")
    row["renewals"] = text.count("token renewed")
    row["errors"] = sorted({line.split(" ", 2)[-1][:160] for line in text.splitlines() if "error" in line.lower()})[:3]
    return row


def density_agent(m):
    procs, sinks = [], []
    try:
        for i in range(m):
            config, sink = agent_config(f"density-agent-{i}", "bench-short", False)
            sinks.append(sink)
            procs.append(subprocess.Popen(agent_cmd(config), env={"PATH": "/usr/bin:/bin"},
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    except BaseException:
        for p in procs:
            p.kill()
        raise
    return hold("bao agent", procs, sinks, m)


def density():
    vault("POST", "auth/kubernetes/role/bench-short", {
        "bound_service_account_names": [STACK["VK_SERVICE_ACCOUNT"]],
        "bound_service_account_namespaces": [STACK["VK_NAMESPACE"]],
        "token_policies": ["vk-demo"], "token_ttl": SIDECAR_TTL, "token_max_ttl": "24h"})
    # A copy the sidecars' uids can read, for re-authentication.
    os.chmod(TMP, 0o755)
    sa_token = os.path.join(TMP, "density-sa-token")
    with open(STACK["SERVICE_ACCOUNT_TOKEN_PATH"]) as src, open(sa_token, "w") as dst:
        dst.write(src.read())
    os.chmod(sa_token, 0o644)
    rows = [density_ours(m, sa_token) for m in DENSITY_SIZES]
    if DENSITY_AGENT:
        rows.append(density_agent(DENSITY_AGENT))
    return {"rows": rows, "ttl": SIDECAR_TTL}


def continuous_sync():
    token = os.path.join(TMP, "fleet-sync-token")
    measure([os.path.join(OURS, "vault-kubernetes-authenticator")], pod_env(VAULT_TOKEN_PATH=token))
    sa_user = f"system:serviceaccount:{STACK['VK_NAMESPACE']}:{STACK['VK_SERVICE_ACCOUNT']}"
    rows = []
    for s in SYNC_S:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: vault("POST", f"secret/data/k8s/fleet-{s}/s{i}",
                                          {"data": {"user": f"user{i}", "password": f"pw-{i}"}}), range(s)))
        for k in SYNC_K:
            env = pod_env(VAULT_TOKEN_PATH=token, VAULT_SECRETS=f"secret/k8s/fleet-{s}/", SECRET_PREFIX=f"f{s}-",
                          SYNCHRONIZER_LABELS=f"fleet=s{s}", SYNC_INTERVAL=f"{SYNC_INTERVAL}s")
            v0, k0 = os.path.getsize(STACK["VK_VAULT_AUDIT_LOG"]), os.path.getsize(STACK["VK_KUBE_AUDIT_LOG"])
            log = open(os.path.join(TMP, f"sync-{s}-{k}.log"), "ab")
            procs = []
            try:
                for _ in range(k):
                    procs.append(subprocess.Popen([os.path.join(OURS, "vault-kubernetes-synchronizer")], env=env,
                                                  stdout=subprocess.DEVNULL, stderr=log))
                time.sleep(SYNC_INTERVAL / 2)  # past every first sync (start-up spread over one interval)
                w0 = time.time()
                c0 = {p.pid: cpu_precise(p.pid) for p in procs}
                time.sleep(SYNC_SECONDS)
                w1 = time.time()
                cpu = sum(cpu_precise(p.pid) - c0[p.pid] for p in procs if p.poll() is None)
                alive = sum(1 for p in procs if p.poll() is None)
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    try:
                        p.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
                log.close()
            time.sleep(2.5)  # the API server's audit batches

            def within(e, key):
                return key in e and w0 <= epoch(e[key]) < w1
            vault_n = sum(1 for e in audit_events(STACK["VK_VAULT_AUDIT_LOG"], v0)
                          if e.get("type") == "response" and within(e, "time"))
            kube = [e for e in audit_events(STACK["VK_KUBE_AUDIT_LOG"], k0)
                    if e.get("stage") == "ResponseComplete" and e.get("user", {}).get("username") == sa_user
                    and within(e, "requestReceivedTimestamp")]
            per_min = 60 / (w1 - w0)
            rows.append({
                "k": k, "s": s, "alive": alive, "seconds": w1 - w0,
                "vault_per_min": vault_n * per_min, "kube_per_min": len(kube) * per_min,
                "writes_per_min": sum(1 for e in kube if e.get("verb") in ("create", "update", "patch", "delete")) * per_min,
                "cpu_per_min": cpu * per_min,
            })
    return {"rows": rows, "interval_s": SYNC_INTERVAL}


def floor():
    """The login request alone from a warm Python client (one keep-alive
    connection, and a new connection per request) against our process from
    start to exit with the token file written, and bao agent's."""
    host, _, port = STACK["VAULT_ADDR"].removeprefix("http://").rpartition(":")
    with open(STACK["SERVICE_ACCOUNT_TOKEN_PATH"]) as f:
        body = json.dumps({"jwt": f.read().strip(), "role": "demo"})
    headers = {"Content-Type": "application/json", "X-Vault-Request": "true"}

    def login(conn):
        t = time.perf_counter()
        conn.request("POST", "/v1/" + LOGIN_PATH, body, headers)
        resp = conn.getresponse()
        assert resp.status == 200, resp.status
        resp.read()
        return time.perf_counter() - t

    warm = HTTPConnection(host, int(port), timeout=30)
    login(warm)
    keepalive = [login(warm) for _ in range(FLOOR_RUNS)]
    warm.close()
    fresh = []
    for _ in range(FLOOR_RUNS):
        conn = HTTPConnection(host, int(port), timeout=30)
        fresh.append(login(conn))
        conn.close()

    def ours(directory):
        token = os.path.join(directory, "floor-token")
        env = pod_env(VAULT_TOKEN_PATH=token)
        times = []
        for _ in range(FLOOR_RUNS):
            if os.path.exists(token):
                os.remove(token)
            t = time.perf_counter()
            pid = os.posix_spawn(os.path.join(OURS, "vault-kubernetes-authenticator"),
                                 ["vault-kubernetes-authenticator"], env,
                                 file_actions=[(os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0)])
            _, status = os.waitpid(pid, 0)
            times.append(time.perf_counter() - t)
            assert os.waitstatus_to_exitcode(status) == 0 and os.path.getsize(token) > 0
        os.remove(token)
        return median(times) * 1000
    # The token file's fsyncs and rename cost what the file system makes
    # them cost: a disk-backed emptyDir, or one with medium Memory (tmpfs).
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    ours_disk = ours(TMP)
    ours_tmpfs = float("nan")
    if shm:
        shm_dir = tempfile.mkdtemp(prefix="vk-bench-", dir=shm)
        try:
            ours_tmpfs = ours(shm_dir)
        finally:
            os.rmdir(shm_dir)
    config, sink = agent_config("floor-agent", "demo", True)
    peer = []
    for _ in range(min(FLOOR_RUNS, 5)):
        if os.path.exists(sink):
            os.remove(sink)
        t = time.perf_counter()
        subprocess.run(agent_cmd(config), env={"PATH": "/usr/bin:/bin"}, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peer.append(time.perf_counter() - t)
    return {"runs": FLOOR_RUNS, "keepalive_ms": median(keepalive) * 1000, "fresh_ms": median(fresh) * 1000,
            "ours_ms": ours_disk, "ours_tmpfs_ms": ours_tmpfs, "peer_ms": median(peer) * 1000,
            "peer_runs": len(peer), "disk": subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", TMP], capture_output=True,
                                                           text=True).stdout.strip() or "?"}


def limits():
    """What bounds a storm on this machine, recorded beside the figures."""
    def read(path):
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            return "?"
    bao_nofile = "?"
    for line in read(f"/proc/{server_pids()['openbao']}/limits").splitlines():
        if line.startswith("Max open files"):
            bao_nofile = line.split()[3]
    import resource
    return {"nofile_bench": resource.getrlimit(resource.RLIMIT_NOFILE)[0], "nofile_openbao": bao_nofile,
            "somaxconn": read("/proc/sys/net/core/somaxconn"),
            "inotify_instances_per_user": read("/proc/sys/fs/inotify/max_user_instances"),
            "ephemeral_ports": read("/proc/sys/net/ipv4/ip_local_port_range").replace("\t", "-")}


def fleet_report(r):
    f = r["floor"]
    print(f"\n### Time to token against its floor (median of {f['runs']}; bao agent {f['peer_runs']})\n")
    print("| | time | / warm client |\n|---|---|---|")
    for label, key in [("login request alone, warm keep-alive client (floor)", "keepalive_ms"),
                       ("login request alone, new connection", "fresh_ms"),
                       (f"ours: process start to exit, token file written ({f['disk']})", "ours_ms"),
                       ("ours: the same, token file on tmpfs", "ours_tmpfs_ms"),
                       ("bao agent, exit_after_auth", "peer_ms")]:
        print(f"| {label} | {f[key]:.1f} ms | {f[key] / f['keepalive_ms']:.1f} |")
    s = r["storm"]
    print("\n### Rollout storm: N logins released at the same moment, one role\n")
    print("| who | N | tokens | p50 | p95 | p99 | max | logins in OpenBao | TokenReviews | peak CPU OpenBao | peak CPU kube-apiserver | CPU of the N |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = s["rows"] + ([s["throttled"]] if s["throttled"] else [])
    for x in rows:
        sv = x["servers"]
        print(f"| {x['who']} | {x['n']} | {x['ok']} | {x['p50_ms']:.0f} ms | {x['p95_ms']:.0f} ms | {x['p99_ms']:.0f} ms "
              f"| {x['max_ms']:.0f} ms | {x['vault_logins']} | {x['token_reviews']} | {sv['openbao']['peak_core_pct']:.0f} % "
              f"| {sv['kube-apiserver']['peak_core_pct']:.0f} % | {x['cpu_s']:.2f} s |")
    ours = {x["n"]: x for x in s["rows"] if x["who"] == "ours"}
    for x in s["rows"]:
        if x["who"] == "bao agent" and x["n"] in ours:
            o = ours[x["n"]]
            print(f"\nAt N = {x['n']}, ours/bao agent: p50 {o['p50_ms'] / x['p50_ms']:.2f}, max {o['max_ms'] / x['max_ms']:.2f}, "
                  f"CPU of the N {o['cpu_s'] / x['cpu_s']:.3f}.")
    if s["throttled"]:
        t = s["throttled"]
        head, tail = t["per_250ms"][:12], t["per_250ms"][12:]
        print(f"\nBehind a proxy answering 429 to {t['share']:.0%} of logins: {t['attempts']} attempts for {t['n']} "
              f"authenticators ({t['attempts'] / t['n']:.2f} each), {t['throttled']} answered 429, {t['ok']} tokens. "
              f"Attempts per 250 ms from the first: {' '.join(map(str, head))}"
              + (f"; then {sum(tail)} more over the next {len(tail) / 4:.0f} s." if tail else "."))
    d = r["density"]
    print(f"\n### Node density: M renewer sidecars on {d['ttl']} TTL tokens\n")
    print("| who | M | running at end | seconds | total RSS | total PSS | CPU | wake-ups/s | threads | Vault req/s | sidecars per GiB (RSS) | (PSS) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for x in d["rows"]:
        print(f"| {x['who']} | {x['m']} | {x['alive']} | {x['seconds']:.0f} | {mib(x['rss_kib'])} | {mib(x['pss_kib'])} "
              f"| {x['cpu_s']:.2f} s | {x['wakeups_per_s']:.1f} | {x['threads']} | {x['vault_rps']:.2f} "
              f"| {x['per_gib_rss']:.0f} | {x['per_gib_pss']:.0f} |")
    agents = [x for x in d["rows"] if x["who"] == "bao agent"]
    if agents and agents[0]["alive"]:
        a = agents[0]
        for x in d["rows"]:
            if x["who"] == "ours" and x["alive"]:
                print(f"\nPer sidecar, ours (M = {x['m']}) / bao agent (M = {a['m']}): RSS "
                      f"{(x['rss_kib'] / x['alive']) / (a['rss_kib'] / a['alive']):.3f}, CPU "
                      f"{(x['cpu_s'] / x['alive']) / max(a['cpu_s'] / a['alive'], 1e-9):.3f}, wake-ups "
                      f"{(x['wakeups_per_s'] / x['alive']) / max(a['wakeups_per_s'] / a['alive'], 1e-9):.3f}.")
    c = r["continuous_sync"]
    print(f"\n### Continuous sync: K synchronizers, SYNC_INTERVAL={c['interval_s']}s, one folder of S secrets, nothing changing\n")
    print("| K | S | Vault requests/min | API server requests/min | writes/min | CPU of the K per min |")
    print("|---|---|---|---|---|---|")
    for x in c["rows"]:
        print(f"| {x['k']} | {x['s']} | {x['vault_per_min']:.0f} | {x['kube_per_min']:.0f} | {x['writes_per_min']:.0f} "
              f"| {x['cpu_per_min']:.2f} s |")
    lim = r["limits"]
    print(f"\nLimits: open files {lim['nofile_bench']} (bench), {lim['nofile_openbao']} (OpenBao); somaxconn "
          f"{lim['somaxconn']}; inotify instances per user {lim['inotify_instances_per_user']}; ephemeral ports "
          f"{lim['ephemeral_ports']}.")


# ---- Hostile answers: memory follows the limits, not the server -------------

HOSTILE_MB = 50


class HostileVault(BaseHTTPRequestHandler):
    """A Vault whose answers are huge: a login or lookup answer, or a KV
    secret, of HOSTILE_MB MB (no Content-Length, so the client cannot refuse
    it before reading); `near-limit` KV reads answer just under the 1.5 MiB
    limit (a value of that size is refused by the API server, after the
    synchronizer read and converted it: the most memory a run can take)."""
    mode = "huge"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.answer()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.answer()

    def answer(self):
        if self.path.startswith("/v1/sys/internal/ui/mounts/"):
            body = json.dumps({"data": {"path": "secret/", "type": "kv", "options": {"version": "2"}}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        size = {"huge": HOSTILE_MB * 1_000_000, "near-limit": 1536 * 1024 - 100,
                "largest-valid": 1024 * 1024 - 100}[self.mode]
        if "/login" in self.path or "/token/" in self.path:
            head = b'{"auth":{"lease_duration":3600,"renewable":true,"client_token":"'
        else:
            head = b'{"data":{"data":{"k":"'
        tail = b'"}}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        try:
            self.wfile.write(head)
            left, chunk = size - len(head) - len(tail), b"a" * 65536
            while left > 0:
                self.wfile.write(chunk[:left])
                left -= len(chunk)
            self.wfile.write(tail)
        except (BrokenPipeError, ConnectionResetError):
            pass


def measure_failing(cmd, env):
    """Like measure(), for runs expected to fail: (peak RSS KiB, exit code, last log line)."""
    out = os.path.join(TMP, "time.out")
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out] + cmd, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with open(out) as f:
        rss = int(f.read().split()[-1])
    lines = proc.stderr.decode(errors="replace").strip().splitlines()
    return rss, proc.returncode, (lines[-1] if lines else "")


def hostile():
    """Peak RSS of each program when Vault answers HOSTILE_MB MB (the
    synchronizer also with 8 KV answers just under its 1.5 MiB limit, and
    with 8 secrets of 1 MiB, the largest a run can write: 8 reads and 8
    writes in parallel)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), HostileVault)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    addr = f"http://127.0.0.1:{server.server_address[1]}"
    token = os.path.join(TMP, "hostile-token")
    rows = []
    try:
        for program, extra, mode, what in [
            ("authenticator", {}, "huge", f"login answer of {HOSTILE_MB} MB"),
            ("token-renewer", {}, "huge", f"lookup-self answer of {HOSTILE_MB} MB"),
            ("synchronizer", {"VAULT_SECRETS": "secret/k8s/huge"}, "huge", f"KV answer of {HOSTILE_MB} MB"),
            ("synchronizer", {"VAULT_SECRETS": ",".join(f"secret/k8s/big{i}" for i in range(8))}, "near-limit",
             "8 KV answers of 1.5 MiB (just under the limit)"),
            ("synchronizer", {"VAULT_SECRETS": ",".join(f"secret/k8s/big{i}" for i in range(8))}, "largest-valid",
             "8 KV secrets of 1 MiB, written as Secrets"),
        ]:
            HostileVault.mode = mode
            with open(token, "w") as f:
                f.write("s.hostile")
            env = pod_env(VAULT_ADDR=addr, VAULT_TOKEN_PATH=token, POD_NAMESPACE="vk-demo",
                          SYNCHRONIZER_PRUNE="false", **extra)
            rss, code, last = measure_failing([os.path.join(OURS, f"vault-kubernetes-{program}")], env)
            rows.append({"program": program, "answer": what, "peak_rss_kib": rss, "exit": code,
                         "message": last.split(": ", 1)[-1][-120:]})
    finally:
        server.shutdown()
        for i in range(8):
            try:
                kube("DELETE", f"/api/v1/namespaces/vk-demo/secrets/big{i}")
            except Exception:
                pass
    return rows + large_folder()


# Many secrets near the 1 MiB limit in one folder of the real OpenBao, and
# other synchronizers' large Secrets in the namespace (issue 20, item 4).
LARGE_FOLDER = int(knob("BENCH_LARGE_FOLDER", "60", "8"))


def large_folder():
    """Peak RSS of the synchronizer with LARGE_FOLDER secrets of 900 KiB
    in one folder and 10 Secrets of 900 KiB of another synchronizer in the
    namespace: first sync and no-op run, to Secrets and to files."""
    blob = "v" * (900 * 1024)
    folder = "k8s/bench-large"
    for i in range(LARGE_FOLDER):
        vault("POST", f"secret/data/{folder}/s{i:02d}", {"data": {"blob": blob}})
    others = [f"other-sync-{i}" for i in range(10)]
    for name in others:
        kube("POST", "/api/v1/namespaces/vk-demo/secrets", {
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "labels": {"vault-kubernetes/managed": "true"},
                         "annotations": {"vault-secret": "secret/other", "vault-kubernetes/owner": "Deployment/other"}},
            "stringData": {"blob": blob}})
    token = os.path.join(TMP, "large-token")
    with open(token, "w") as f:
        f.write(STACK["VK_VAULT_ROOT_TOKEN"])
    target = tempfile.mkdtemp(prefix="large-", dir=TMP)
    base = pod_env(VAULT_TOKEN_PATH=token, POD_NAMESPACE="vk-demo", VAULT_SECRETS=f"secret/{folder}/",
                   SYNCHRONIZER_ID="bench-large")
    what = f"{LARGE_FOLDER} secrets of 900 KiB in a folder, another synchronizer's 10 of 900 KiB in the namespace"
    rows = []
    try:
        for sink, extra in [("Secrets", {}), ("files", {"SYNCHRONIZER_TARGET_DIR": target})]:
            for run in ["first sync", "no-op"]:
                rss, code, last = measure_failing([os.path.join(OURS, "vault-kubernetes-synchronizer")],
                                                  dict(base, **extra))
                rows.append({"program": "synchronizer", "answer": f"{what}: {sink}, {run}", "peak_rss_kib": rss,
                             "exit": code, "message": last.split(": ", 1)[-1][-120:]})
    finally:
        for name in others + [f"s{i:02d}" for i in range(LARGE_FOLDER)]:
            try:
                kube("DELETE", f"/api/v1/namespaces/vk-demo/secrets/{name}")
            except Exception:
                pass
    return rows


def hostile_report(rows):
    print("\n### Hostile answers: peak RSS (Vault answering without Content-Length; the large-folder rows from the real OpenBao)\n")
    print("| program | answer | peak RSS | exit | last log line (end) |\n|---|---|---|---|---|")
    for x in rows:
        print(f"| {x['program']} | {x['answer']} | {mib(x['peak_rss_kib'])} | {x['exit']} | {x['message']} |")


def fleet():
    return {"floor": floor(), "storm": storm(), "density": density(), "continuous_sync": continuous_sync(),
            "limits": limits()}


def main():
    results = {"machine": versions(), "time_to_token": time_to_token(), "size": sizes(),
               "sync": sync_scale(), "sidecar": sidecar(), "fleet": fleet(), "hostile": hostile()}
    os.makedirs(os.path.join(ROOT, "target/bench"), exist_ok=True)
    with open(os.path.join(ROOT, "target/bench/results.json"), "w") as f:
        json.dump(results, f, indent=2)
    report(results)
    fleet_report(results["fleet"])
    hostile_report(results["hostile"])


if __name__ == "__main__":
    main()
