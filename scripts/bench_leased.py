#!/usr/bin/env python3
"""Leased secrets, side by side: the synchronizer as a sidecar against
`bao agent` with templates, both keeping one database credential
(database/creds, renewed, replaced at max TTL) and one certificate
(pki/issue, re-issued) valid for the same time on the stack of
scripts/bench.sh. Reports resident memory, CPU time and Vault requests per
hour (OpenBao's audit log, by each one's Vault role), and checks that ours
is resident in at most 1/20 of the agent's memory.

Knobs: BENCH_LEASED_SECONDS (120; 10 with BENCH_FLEET=smoke), the database
lease BENCH_LEASED_DB_TTL/BENCH_LEASED_DB_MAX_TTL (30s/90s) and the
certificate's BENCH_LEASED_CERT_TTL (60s): short, so the window sees
renewals, new credentials and re-issues. Requests per hour scale with them.
Writes target/bench/leased.json.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = os.path.join(ROOT, "target/x86_64-unknown-linux-musl/release")
SMOKE = os.environ.get("BENCH_FLEET") == "smoke"
SECONDS = int(os.environ.get("BENCH_LEASED_SECONDS", "10" if SMOKE else "120"))
DB_TTL = os.environ.get("BENCH_LEASED_DB_TTL", "30s")
DB_MAX_TTL = os.environ.get("BENCH_LEASED_DB_MAX_TTL", "90s")
CERT_TTL = os.environ.get("BENCH_LEASED_CERT_TTL", "60s")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import STACK, cpu_precise, pod_env, proc_stats, vault  # noqa: E402  (the stack's helpers)


def roles():
    """A database role, a PKI role, and one Vault login role for each side,
    so the audit log tells their requests apart."""
    vault("POST", "database/roles/bench-leased", {
        "db_name": "postgres",
        "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"],
        "default_ttl": DB_TTL, "max_ttl": DB_MAX_TTL})
    vault("POST", "pki/roles/bench-leased", {
        "allowed_domains": ["vk.test"], "allow_subdomains": True, "key_type": "ec",
        "max_ttl": "1h", "generate_lease": True})
    vault("PUT", "sys/policies/acl/bench-leased", {"policy": (
        'path "database/creds/bench-leased" { capabilities = ["read"] }\n'
        'path "pki/issue/bench-leased" { capabilities = ["update"] }\n'
        'path "sys/leases/renew" { capabilities = ["update"] }\n'
        'path "sys/leases/revoke" { capabilities = ["update"] }\n')})
    for side in ("ours", "agent"):
        vault("POST", f"auth/kubernetes/role/bench-leased-{side}", {
            "bound_service_account_names": [STACK["VK_SERVICE_ACCOUNT"]],
            "bound_service_account_namespaces": [STACK["VK_NAMESPACE"]],
            "token_policies": ["bench-leased"], "token_ttl": "1h", "token_max_ttl": "24h"})


def agent_config(tmp):
    out = os.path.join(tmp, "agent")
    os.makedirs(out)
    path = os.path.join(tmp, "agent.hcl")
    with open(path, "w") as f:
        f.write(f"""
vault {{ address = "{STACK['VAULT_ADDR']}" }}
auto_auth {{
  method "kubernetes" {{
    mount_path = "auth/kubernetes"
    config = {{
      role = "bench-leased-agent"
      token_path = "{STACK['SERVICE_ACCOUNT_TOKEN_PATH']}"
    }}
  }}
}}
template {{
  destination = "{out}/db"
  contents = "{{{{ with secret \\"database/creds/bench-leased\\" }}}}{{{{ .Data.username }}}}\\n{{{{ .Data.password }}}}{{{{ end }}}}"
}}
template {{
  destination = "{out}/tls.pem"
  contents = "{{{{ with pkiCert \\"pki/issue/bench-leased\\" \\"common_name=bench.vk.test\\" \\"ttl={CERT_TTL}\\" }}}}{{{{ .Cert }}}}{{{{ .CA }}}}{{{{ .Key }}}}{{{{ end }}}}"
}}
""")
    return path, out


def audit_count(start, role):
    """Responses to requests made with a token of this Vault role, logins included."""
    n = 0
    with open(STACK["VK_VAULT_AUDIT_LOG"]) as f:
        f.seek(start)
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("type") != "response":
                continue
            meta = ((e.get("auth") or {}).get("metadata") or {})
            if meta.get("role") == role:
                n += 1
    return n


def main():
    roles()
    tmp = tempfile.mkdtemp(prefix="vk-bench-leased-")
    try:
        run(tmp)
    finally:
        # A token and credentials are in there.
        shutil.rmtree(tmp, ignore_errors=True)


def run(tmp):
    token = os.path.join(tmp, "token")
    target = os.path.join(tmp, "files")
    os.makedirs(target)
    audit_start = os.path.getsize(STACK["VK_VAULT_AUDIT_LOG"])
    t0 = time.monotonic()
    env = pod_env(VAULT_TOKEN_PATH=token, VAULT_ROLE="bench-leased-ours")
    subprocess.run([os.path.join(OURS, "vault-kubernetes-authenticator")], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ours = subprocess.Popen([os.path.join(OURS, "vault-kubernetes-synchronizer")], env=env | {
        "VAULT_SECRETS": f"creds:database/creds/bench-leased:db,"
                         f"cert:pki/issue/bench-leased?common_name=bench.vk.test&ttl={CERT_TTL}:tls",
        "SYNCHRONIZER_TARGET_DIR": target, "SYNC_INTERVAL": "1h",
        "VAULT_REVOKE_ON_SHUTDOWN": "true"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    config, agent_out = agent_config(tmp)
    agent = subprocess.Popen([os.path.join(STACK["VK_BIN"], "bao"), "agent", "-log-level=error",
                              f"-config={config}"], env={"PATH": "/usr/bin:/bin"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(SECONDS)
    # A loaded machine (CI) may need longer than a smoke run's window for
    # the first deliveries: wait for them, at most 60 s more.
    delivered = lambda: {  # noqa: E731
        "ours": os.path.exists(os.path.join(target, "tls", "tls.crt"))
        and os.path.exists(os.path.join(target, "db", "password")),
        "agent": os.path.exists(os.path.join(agent_out, "tls.pem"))
        and os.path.exists(os.path.join(agent_out, "db"))}
    deadline = time.monotonic() + 60
    while not all(delivered().values()) and time.monotonic() < deadline:
        time.sleep(0.5)
    elapsed = time.monotonic() - t0
    stats = {"ours": proc_stats(ours.pid), "agent": proc_stats(agent.pid)}
    for side, p in (("ours", ours), ("agent", agent)):
        stats[side]["cpu_s"] = cpu_precise(p.pid)
    delivered = delivered()
    for p in (ours, agent):
        p.terminate()
    log = ours.communicate(timeout=10)[1].decode(errors="replace")
    agent.wait(timeout=10)
    for side, role in (("ours", "bench-leased-ours"), ("agent", "bench-leased-agent")):
        stats[side]["vault_requests"] = audit_count(audit_start, role)
        stats[side]["vault_requests_per_hour"] = round(stats[side]["vault_requests"] * 3600 / elapsed)
    stats["ours"]["renewals"] = log.count("lease renewed")
    stats["ours"]["issues"] = log.count("certificate issued")
    result = {"seconds": SECONDS, "db_ttl": DB_TTL, "db_max_ttl": DB_MAX_TTL, "cert_ttl": CERT_TTL,
              "delivered": delivered, **stats,
              "rss_ratio": stats["ours"]["rss_kib"] / stats["agent"]["rss_kib"]}
    os.makedirs(os.path.join(ROOT, "target/bench"), exist_ok=True)
    with open(os.path.join(ROOT, "target/bench/leased.json"), "w") as f:
        json.dump(result, f, indent=2)

    mib = lambda kib: f"{kib / 1024:.1f} MiB"  # noqa: E731
    print(f"\n### Leased secrets: one database credential and one certificate, {SECONDS} s"
          f" (database lease {DB_TTL} up to {DB_MAX_TTL}, certificate {CERT_TTL})\n")
    print("| | ours (synchronizer sidecar) | bao agent (templates) | ours/agent |\n|---|---|---|---|")
    o, a = stats["ours"], stats["agent"]
    print(f"| resident memory at the end | {mib(o['rss_kib'])} | {mib(a['rss_kib'])} | {o['rss_kib'] / a['rss_kib']:.3f} |")
    print(f"| peak resident memory | {mib(o['peak_rss_kib'])} | {mib(a['peak_rss_kib'])} | {o['peak_rss_kib'] / a['peak_rss_kib']:.3f} |")
    print(f"| CPU time | {o['cpu_s'] * 1000:.0f} ms | {a['cpu_s'] * 1000:.0f} ms | {o['cpu_s'] / max(a['cpu_s'], 1e-6):.3f} |")
    print(f"| threads | {o['threads']} | {a['threads']} | |")
    print(f"| Vault requests per hour (in {SECONDS} s: ours {o['vault_requests']}, agent {a['vault_requests']}) "
          f"| {o['vault_requests_per_hour']} | {a['vault_requests_per_hour']} | |")
    print(f"| delivered | {delivered['ours']} | {delivered['agent']} | |")
    ok = result["rss_ratio"] <= 1 / 20
    print(f"\nours is resident in {result['rss_ratio']:.3f} of the agent's memory: "
          f"{'within' if ok else 'OVER'} the 1/20 budget")
    if not (delivered["ours"] and delivered["agent"]):
        raise SystemExit("bench_leased: a side delivered nothing")


if __name__ == "__main__":
    main()
