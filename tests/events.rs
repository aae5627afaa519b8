//! Termination messages (docs/events.md) against the real stack: the
//! programs run as processes with a pod's environment, and the termination
//! message is read from the file `TERMINATION_MESSAGE_PATH` names.

mod support;

use std::path::Path;
use support::*;

fn last_message(log: &str) -> &str {
    // `YYYY/MM/DD HH:MM:SS ` then the message.
    log.lines().last().unwrap_or("").get(20..).unwrap_or("")
}

fn termination_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("termination-log");
    std::fs::write(&path, "").unwrap();
    path
}

#[test]
fn a_failed_login_leaves_its_error_line_as_termination_message() {
    let pod = Pod::new(RoleOptions::default());
    let file = termination_file(&pod.dir);
    let out = run(
        AUTHENTICATOR,
        with(
            &pod.env(),
            &[
                ("VAULT_ROLE", "no-such-role"),
                ("LOGIN_TIMEOUT", "2s"),
                ("TERMINATION_MESSAGE_PATH", file.to_str().unwrap()),
            ],
        ),
    );
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    let message = std::fs::read_to_string(&file).unwrap();
    record_status(&message);
    assert_eq!(message, last_message(&log), "{log}");
    assert!(message.contains("no-such-role"), "{message}");
    let jwt = std::fs::read_to_string(pod.dir.join("sa/token")).unwrap();
    assert!(!message.contains(jwt.trim()), "{message}");
}

#[test]
fn a_configuration_error_is_a_termination_message_too() {
    let dir = std::env::temp_dir().join(unique("vk-term"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = termination_file(&dir);
    let out = run(
        SYNCHRONIZER,
        [
            ("VAULT_TOKEN_PATH", "/nonexistent/token"),
            ("TERMINATION_MESSAGE_PATH", file.to_str().unwrap()),
        ],
    );
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    let message = std::fs::read_to_string(&file).unwrap();
    assert!(message.contains("VAULT_SECRETS"), "{message}");
    assert_eq!(message, last_message(&log));
    // A long message is cut at the kubelet's 4096 bytes, on a character boundary.
    let long = format!("secret/{}", "é".repeat(3000));
    let out = run(
        SYNCHRONIZER,
        [
            ("VAULT_TOKEN_PATH", "/nonexistent/token"),
            ("VAULT_SECRETS", long.as_str()),
            ("SECRET_PREFIX", "Bad Prefix"),
            ("TERMINATION_MESSAGE_PATH", file.to_str().unwrap()),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let message = std::fs::read(&file).unwrap();
    assert!(message.len() <= 4096, "{}", message.len());
    assert!(String::from_utf8(message).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn no_termination_file_is_created_and_a_bad_one_changes_nothing() {
    let dir = std::env::temp_dir().join(unique("vk-term"));
    std::fs::create_dir_all(dir.join("a-directory")).unwrap();
    let missing = dir.join("missing");
    for path in [missing.clone(), dir.join("a-directory"), "/dev/null".into()] {
        let out = run(
            SYNCHRONIZER,
            [
                ("VAULT_TOKEN_PATH", "/nonexistent/token"),
                ("TERMINATION_MESSAGE_PATH", path.to_str().unwrap()),
            ],
        );
        let log = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{log}");
        // One line: the error itself, nothing about the file.
        assert_eq!(log.lines().count(), 1, "{log}");
    }
    assert!(!missing.exists(), "the file was created");
    // A successful run leaves the file as it was.
    let pod = Pod::new(RoleOptions::default());
    let file = termination_file(&pod.dir);
    let out = run(
        AUTHENTICATOR,
        with(
            &pod.env(),
            &[("TERMINATION_MESSAGE_PATH", file.to_str().unwrap())],
        ),
    );
    assert_ok(&out);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every container of ours in the shipped manifests (the demo's, and the
/// injector's when it is there) falls back to its log for the termination
/// message, should it die before writing one.
#[test]
fn our_manifests_fall_back_to_logs_on_error() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for dir in ["demo/manifests", "deploy/injector"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let image = line.trim_start().trim_start_matches("- ");
                if !(image.starts_with("image:") && line.contains("IMAGE_TAG")) {
                    continue;
                }
                checked += 1;
                // The container's fields: up to the next list item at its indent or less.
                let indent = line.len() - line.trim_start().len();
                let block_start = (0..=i)
                    .rev()
                    .find(|&j| lines[j].trim_start().starts_with("- "))
                    .unwrap_or(0);
                let fields = lines[block_start..]
                    .iter()
                    .enumerate()
                    .take_while(|(n, l)| {
                        *n == 0 || l.trim().is_empty() || l.len() - l.trim_start().len() >= indent
                    })
                    .map(|(_, l)| *l)
                    .collect::<Vec<_>>()
                    .join("\n");
                assert!(
                    fields.contains("terminationMessagePolicy: FallbackToLogsOnError"),
                    "{}: {line}",
                    path.display()
                );
            }
        }
    }
    assert!(checked >= 9, "{checked} containers of ours");
}
