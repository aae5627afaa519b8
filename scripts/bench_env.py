#!/usr/bin/env python3
"""vault-kubernetes-env beside bank-vaults' vault-env (1.15.3, built by
`scripts/setup.sh vault-env`) on the same secrets: time from process start
to the app's first instruction, and peak RSS. Run by scripts/bench-env.sh
(from scripts/bench.sh) on the stack bench.sh started; prints a markdown
table and writes target/bench/env.json. Figures only: nothing asserts a speed.

The app is a static probe that prints CLOCK_MONOTONIC at its first
instruction; the time of the probe started directly (through the same
/usr/bin/time) is subtracted, so a row is what the wrapper adds. Peak RSS is
GNU time's maximum over the process's whole life, before and after the
exec (the kernel keeps the larger of the two), and the probe's own is a few
hundred KiB. Each wrapper is checked once per row to hand the probe the
right values (compared in memory, never printed).

Knobs: BENCH_RUNS (5), BENCH_ENV_VARS (20: variables per row, from secrets
of 4 keys each).
"""

import hashlib
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the stack, its admin clients and helpers)

ROOT = bench.ROOT
RUNS = bench.RUNS
VARS = int(os.environ.get("BENCH_ENV_VARS", "20"))
OURS = os.path.join(bench.OURS, "vault-kubernetes-env")
PEER = os.path.join(bench.STACK["VK_BIN"], "vault-env")
TMP = bench.TMP
PROBE_C = r"""
#include <stdio.h>
#include <time.h>
int main(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    printf("%lld\n", (long long)t.tv_sec * 1000000000LL + t.tv_nsec);
    return 0;
}
"""


def build_probe():
    src, out = os.path.join(TMP, "probe.c"), os.path.join(TMP, "probe")
    with open(src, "w") as f:
        f.write(PROBE_C)
    subprocess.run(["musl-gcc", "-Os", "-static", "-o", out, src], check=True)
    return out


def setup():
    """A policy and a role of their own, and the secrets: VARS keys over
    secrets of 4 keys at secret/bench-env/sN. Returns {variable: (reference, value)}."""
    bench.vault("PUT", "sys/policies/acl/bench-env",
                {"policy": 'path "secret/data/bench-env/*" { capabilities = ["read"] }'})
    bench.vault("POST", "auth/kubernetes/role/bench-env", {
        "bound_service_account_names": [bench.STACK["VK_SERVICE_ACCOUNT"]],
        "bound_service_account_namespaces": [bench.STACK["VK_NAMESPACE"]],
        "token_policies": ["bench-env"], "token_ttl": "1h", "token_max_ttl": "24h"})
    refs, secrets = {}, {}
    for i in range(VARS):
        path, key = f"bench-env/s{i // 4}", f"key{i % 4}"
        value = hashlib.sha256(f"{time.time()}-{i}".encode()).hexdigest()[:24]
        secrets.setdefault(path, {})[key] = value
        refs[f"BENCH_VAR_{i}"] = (f"vault:secret/data/{path}#{key}", value)
    for path, data in secrets.items():
        bench.vault("POST", f"secret/data/{path}", {"data": data})
    return refs


def token_file():
    created = bench.vault("POST", "auth/token/create", {"policies": ["bench-env"], "ttl": "1h"})
    path = os.path.join(TMP, "env-token")
    with open(path, "w") as f:
        f.write(created["auth"]["client_token"])
    return path


def envs(refs, mode, token):
    """The same job for both wrappers, each in its own variables."""
    common = {"PATH": "/usr/bin:/bin", "HOME": os.path.join(TMP, "home"),
              "VAULT_ADDR": bench.STACK["VAULT_ADDR"]}
    common |= {name: ref for name, (ref, _) in refs.items()}
    sa = bench.STACK["SERVICE_ACCOUNT_TOKEN_PATH"]
    if mode == "token file":
        ours = {"VAULT_TOKEN_PATH": token}
        peer = {"VAULT_TOKEN_FILE": token}
    else:
        ours = {"VAULT_ROLE": "bench-env", "SERVICE_ACCOUNT_TOKEN_PATH": sa}
        # vault-env keeps its token unless told: revoke, as ours does by default.
        peer = {"VAULT_ROLE": "bench-env", "VAULT_PATH": "kubernetes", "VAULT_AUTH_METHOD": "jwt",
                "KUBERNETES_SERVICE_ACCOUNT_TOKEN": sa, "VAULT_REVOKE_TOKEN": "true"}
    return common | ours, common | peer


def timed(cmd, env):
    """(microseconds from start to the probe's first instruction, peak RSS KiB)."""
    out = os.path.join(TMP, "env-time.out")
    start = time.monotonic_ns()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out] + cmd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.decode(errors="replace"))
        raise SystemExit(f"{cmd[0]} exited {proc.returncode}")
    first = int(proc.stdout.split()[-1])
    with open(out) as f:
        rss = int(f.read().split()[-1])
    return (first - start) / 1000, rss


def check_values(cmd, env, refs):
    """The app sees every value: compared here, never printed."""
    proc = subprocess.run(cmd + ["/usr/bin/env", "-0"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    seen = dict(item.split("=", 1) for item in proc.stdout.decode().split("\0") if "=" in item)
    wrong = [name for name, (_, value) in refs.items() if seen.get(name) != value]
    if proc.returncode != 0 or wrong:
        raise SystemExit(f"{cmd[0]}: exit {proc.returncode}, wrong or missing values for {wrong}")


def row(refs, mode, probe):
    token = token_file()
    ours_env, peer_env = envs(refs, mode, token)
    ours_cmd, peer_cmd = [OURS, "--"], [PEER]
    check_values(ours_cmd, ours_env, refs)
    check_values(peer_cmd, peer_env, refs)
    times = {"ours": [], "peer": [], "probe": []}
    rss = {"ours": [], "peer": []}
    for _ in range(RUNS):
        t, _ = timed([probe], {"PATH": "/usr/bin:/bin"})
        times["probe"].append(t)
        for name, cmd, env in (("ours", ours_cmd, ours_env), ("peer", peer_cmd, peer_env)):
            t, r = timed(cmd + [probe], env)
            times[name].append(t)
            rss[name].append(r)
    base = bench.median(times["probe"])
    ours_us, peer_us = bench.median(times["ours"]) - base, bench.median(times["peer"]) - base
    ours_rss, peer_rss = bench.median(rss["ours"]), bench.median(rss["peer"])
    return {"mode": mode, "variables": len(refs), "secrets": (len(refs) + 3) // 4, "runs": RUNS,
            "ours_us": ours_us, "peer_us": peer_us, "time_ratio": ours_us / peer_us,
            "ours_peak_rss_kib": ours_rss, "peer_peak_rss_kib": peer_rss, "rss_ratio": ours_rss / peer_rss,
            "probe_us": base}


def main():
    os.makedirs(os.path.join(TMP, "home"), exist_ok=True)
    probe = build_probe()
    refs = setup()
    rows = [row(refs, mode, probe) for mode in ("token file", "login (Kubernetes auth)")]
    sizes = {"ours_bytes": os.path.getsize(OURS), "peer_bytes": os.path.getsize(os.path.realpath(PEER))}
    os.makedirs(os.path.join(ROOT, "target/bench"), exist_ok=True)
    with open(os.path.join(ROOT, "target/bench/env.json"), "w") as f:
        json.dump({"rows": rows, "size": sizes}, f, indent=2)
    print("\n### Env wrapper: start to the app's first instruction, beside bank-vaults' vault-env 1.15.3\n")
    print(f"Same {VARS} variables from {(VARS + 3) // 4} KV v2 secrets; median of {RUNS} runs; "
          "time net of starting the app directly; ratio = ours / vault-env.\n")
    print("| token from | ours | vault-env | time ratio | ours peak RSS | vault-env peak RSS | RSS ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['ours_us'] / 1000:.1f} ms | {r['peer_us'] / 1000:.1f} ms | "
              f"{r['time_ratio']:.2f} | {bench.mib(r['ours_peak_rss_kib'])} | "
              f"{bench.mib(r['peer_peak_rss_kib'])} | {r['rss_ratio']:.2f} |")
    print(f"\nBinary: ours {sizes['ours_bytes'] / 1e6:.2f} MB, vault-env {sizes['peer_bytes'] / 1e6:.1f} MB "
          "(Go, stripped).")


if __name__ == "__main__":
    main()
