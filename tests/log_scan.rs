//! The last test of `scripts/test.sh`: every log line the programs wrote
//! during the other tests (collected by `support::record_log`) is checked
//! for secrets (every value `support::record_secret` saw: KV values, JWTs,
//! secret ids, passwords, admin tokens, plus anything shaped like an
//! OpenBao token or a JWT) and for being one event on one line. So are the
//! other places a program leaves text (docs/events.md): the termination
//! messages and Events the tests read (`support::record_status`) and, when
//! the cluster is still up, every Event and every container's termination
//! message in it. Ignored in a plain `cargo test`, which may run it before
//! the others.

mod support;

use std::collections::BTreeSet;

use vault_kubernetes::http::Method;

/// `s.` + 24 (service tokens), `b.` + 60 or more (batch tokens), Vault's
/// `hvs.`/`hvb.`/`hvr.`, and JWTs (`eyJ...` header and payload).
fn token_shaped(line: &str) -> Option<&str> {
    let b = line.as_bytes();
    let word = |i: usize| {
        b[i..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
            .count()
    };
    for i in 0..b.len() {
        if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.') {
            continue;
        }
        let rest = &line[i..];
        let len = word(i);
        let body = |prefix: &str| {
            rest[..len]
                .strip_prefix(prefix)
                .map_or(0, |t| t.bytes().filter(u8::is_ascii_alphanumeric).count())
        };
        let hit = body("s.") >= 24
            || body("b.") >= 60
            || ["hvs.", "hvb.", "hvr."].iter().any(|p| body(p) >= 24)
            || (rest.starts_with("eyJ") && rest[..len].matches(".eyJ").count() == 1);
        if hit {
            return Some(&rest[..len]);
        }
    }
    None
}

fn one_line_event(line: &str) -> bool {
    let b = line.as_bytes();
    let text = b.len() > 20
        && b[..19].iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'/',
            10 => *c == b' ',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
        && b[19] == b' ';
    text || serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v["msg"].is_string())
}

#[test]
#[ignore = "run by scripts/test.sh after every other test"]
fn no_secret_in_any_log_line() {
    let mut secrets = BTreeSet::new();
    let mut lines = Vec::new();
    // Termination messages and Events: not log lines, so not in log format.
    let mut status = cluster_status();
    let from_cluster = status.len();
    for entry in std::fs::read_dir(support::LOG_DIR).expect("no logs collected") {
        let path = entry.unwrap().path();
        let text = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&text);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("secrets-") {
            secrets.extend(text.lines().map(str::to_string));
        } else if name.starts_with("status-") {
            status.extend(text.lines().map(str::to_string));
        } else {
            lines.extend(text.lines().map(str::to_string));
        }
    }
    let mut leaks = Vec::new();
    let mut broken = Vec::new();
    for line in lines.iter().chain(&status) {
        if let Some(s) = secrets.iter().find(|s| line.contains(s.as_str())) {
            leaks.push(format!("{} chars of a recorded secret in: {line}", s.len()));
        } else if let Some(t) = token_shaped(line) {
            leaks.push(format!("token-shaped {}... in: {line}", &t[..6]));
        }
    }
    for line in &lines {
        if !one_line_event(line) {
            broken.push(line.clone());
        }
    }
    println!(
        "log scan: {} lines from the programs, {} termination messages and Events ({} read from the cluster), \
         {} secret values, {} leaks, {} lines not one event",
        lines.len(),
        status.len(),
        from_cluster,
        secrets.len(),
        leaks.len(),
        broken.len()
    );
    assert!(
        lines.len() > 100,
        "too few lines collected: {}",
        lines.len()
    );
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// Every Event's note and every container's termination message in the
/// cluster, when the tests' cluster is still up (scripts/test.sh runs this
/// scan before bringing it down); nothing otherwise.
fn cluster_status() -> Vec<String> {
    let up = std::fs::read_to_string(support::stack_env_file())
        .is_ok_and(|env| env.lines().any(|l| l == "export VK_CLUSTER=1"));
    if !up {
        return Vec::new();
    }
    let s = support::stack();
    let mut out = Vec::new();
    let events = s.kube(Method::Get, "/apis/events.k8s.io/v1/events", None);
    for e in events["items"].as_array().into_iter().flatten() {
        if let Some(note) = e["note"].as_str() {
            out.push(format!(
                "event {} {}: {note}",
                e["regarding"]["name"], e["reason"]
            ));
        }
    }
    let pods = s.kube(Method::Get, "/api/v1/pods", None);
    for p in pods["items"].as_array().into_iter().flatten() {
        let status = &p["status"];
        let containers = ["initContainerStatuses", "containerStatuses"]
            .iter()
            .flat_map(|k| status[k].as_array().into_iter().flatten());
        for c in containers {
            for state in ["state", "lastState"] {
                if let Some(m) = c[state]["terminated"]["message"].as_str() {
                    out.push(format!(
                        "termination message of {}/{}: {}",
                        p["metadata"]["name"],
                        c["name"],
                        m.replace('\n', "\\n")
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn token_shapes_are_recognised() {
    assert!(token_shaped("x s.m4xD5Tqk2pLqTQYDsT1Y5CQP y").is_some());
    assert!(token_shaped("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.sig").is_some());
    assert!(token_shaped("read secret/k8s/first from vault").is_none());
    assert!(token_shaped("token renewed (ttl 10s)").is_none());
    assert!(token_shaped("stored at /tmp/vk-t-1/tokens/token").is_none());
    assert!(one_line_event("2026/11/29 15:00:00 x"));
    assert!(one_line_event(r#"{"time":"t","level":"info","msg":"m"}"#));
    assert!(!one_line_event("\t* permission denied"));
}
