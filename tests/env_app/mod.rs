//! The app the env wrapper's tests start through it, on the host
//! (tests/env.rs) and in the busybox image (tests/pods_env.rs): a shell
//! that reports its PID, a SHA-256 digest of each variable asked about
//! (never a value), the names in its initial environment
//! (`/proc/self/environ`), its blocked and ignored signals, and its open
//! sockets.
#![allow(dead_code)] // each test file uses a different part

use std::collections::{HashMap, HashSet};

pub const BUSYBOX: &str = "/bin/busybox";

/// What the app reports about itself.
#[derive(Debug, Default)]
pub struct Seen {
    pub pid: u32,
    /// Variable to the hex SHA-256 of its value, `None` when unset.
    pub digests: HashMap<String, Option<String>>,
    /// Names in the app's initial environment.
    pub names: HashSet<String>,
    pub sig_ign: u64,
    pub sig_blk: u64,
    pub sockets: usize,
}

/// The app's script: busybox applets by absolute path, so the same script
/// runs on the host and in the busybox image (tests/pods_env.rs).
pub fn script(vars: &[&str]) -> String {
    let bb = BUSYBOX;
    format!(
        r#"echo "pid=$$"
# Read with builtins before anything forks: a shell waiting for a child
# blocks signals of its own.
while read -r k v; do
  case $k in SigIgn:|SigBlk:) echo "$k $v";; esac
done < /proc/$$/status
for name in {vars}; do
  if eval "test \"\${{$name+set}}\" = set"; then
    d=$(eval "printf %s \"\$$name\"" | {bb} sha256sum | {bb} cut -d' ' -f1)
    echo "var $name $d"
  else
    echo "var $name unset"
  fi
done
echo "names $({bb} tr '\0' '\n' < /proc/$$/environ | {bb} cut -d= -f1 | {bb} tr '\n' ' ')"
echo "sockets $({bb} ls -l /proc/$$/fd | {bb} grep -c socket)"
"#,
        vars = vars.join(" ")
    )
}

pub fn parse(stdout: &[u8]) -> Seen {
    let mut seen = Seen::default();
    for line in String::from_utf8_lossy(stdout).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [pid] if pid.starts_with("pid=") => seen.pid = pid[4..].parse().unwrap(),
            ["var", name, "unset"] => {
                seen.digests.insert(name.to_string(), None);
            }
            ["var", name, digest] => {
                seen.digests
                    .insert(name.to_string(), Some(digest.to_string()));
            }
            ["names", names @ ..] => seen.names = names.iter().map(|n| n.to_string()).collect(),
            ["SigIgn:", mask] => seen.sig_ign = u64::from_str_radix(mask, 16).unwrap(),
            ["SigBlk:", mask] => seen.sig_blk = u64::from_str_radix(mask, 16).unwrap(),
            ["sockets", n] => seen.sockets = n.parse().unwrap(),
            _ => {}
        }
    }
    seen
}

pub fn sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
