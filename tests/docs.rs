//! The docs: every example of README.md and docs/*.md runs as written.
//!
//! Every fenced block is a picture or an output (`text`), or says on its
//! first line how it is checked (docs/development.md, "Examples in the
//! docs"):
//! - `# from <path>`: the rest is the whole file, byte for byte (a manifest
//!   the demo applies, a script the tests run);
//! - `# in <path>`: each command line is a line of that file (the two
//!   commands of `.ci/run`);
//! - `# run by tests/docs.rs`: run here, as written, on a stack of its own;
//! - `# untested: <why>`: needs the reader's cluster, Vault or registry, or
//!   is a fragment; the reason is required.
//!
//! Also: image tags are ones `scripts/build-images.sh` makes, relative
//! links and anchors resolve, every docs page is linked from the README,
//! the README stays short, and every variable `src/config/` reads is in
//! docs/configuration.md, and docs/injector.md's annotation and ConfigMap
//! tables match deploy/injector/.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");
const RUN_MARKER: &str = "# run by tests/docs.rs";

/// README.md and docs/*.md, as (path relative to the root, text).
fn pages() -> Vec<(String, String)> {
    let mut names = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .expect("docs/")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    names.extend(docs);
    names
        .into_iter()
        .map(|n| {
            let text = std::fs::read_to_string(Path::new(ROOT).join(&n)).unwrap();
            (n, text)
        })
        .collect()
}

struct Block {
    page: String,
    /// 1-based line of the opening fence.
    line: usize,
    lang: String,
    body: Vec<String>,
}

impl Block {
    fn at(&self) -> String {
        format!("{}:{}", self.page, self.line)
    }
}

/// Fenced blocks (```lang ... ```) of one page.
fn blocks(page: &str, text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        match open.take() {
            None => {
                if let Some(lang) = line.trim_start().strip_prefix("```") {
                    open = Some(Block {
                        page: page.to_string(),
                        line: i + 1,
                        lang: lang.trim().to_string(),
                        body: Vec::new(),
                    });
                }
            }
            Some(mut b) => {
                if line.trim_start() == "```" {
                    out.push(b);
                } else {
                    b.body.push(line.to_string());
                    open = Some(b);
                }
            }
        }
    }
    if let Some(b) = open {
        panic!("{}: unclosed code block", b.at());
    }
    out
}

/// Text outside code blocks and inline code, where links live.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Drop inline code spans.
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                out.push_str(part);
            }
        }
        out.push('\n');
    }
    out
}

/// `# ...` comment removed from a shell line (outside quotes is enough for
/// the docs' commands).
fn command_part(line: &str) -> &str {
    match line.find(" #") {
        Some(i) => line[..i].trim(),
        None => line.trim(),
    }
}

/// Paths of `scripts/` and `demo/` files a shell block calls.
fn scripts_called(body: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for line in body {
        for word in command_part(line).split(|c: char| c.is_whitespace() || c == ';') {
            let word = word.trim_matches(|c| c == '"' || c == '\'' || c == '(' || c == ')');
            if (word.starts_with("scripts/") || word.starts_with("demo/")) && word.ends_with(".sh")
            {
                out.push(word.to_string());
            }
        }
    }
    out
}

#[test]
fn every_example_says_how_it_is_checked() {
    #[allow(clippy::disallowed_methods)] // a test's own switch
    let update = std::env::var_os("VK_DOCS_UPDATE").is_some();
    let mut problems = Vec::new();
    let mut counts = [0usize; 5];
    for (page, text) in pages() {
        let mut new_text: Option<String> = None;
        for b in blocks(&page, &text) {
            if b.lang == "text" {
                counts[4] += 1;
                continue;
            }
            if b.lang.is_empty() {
                problems.push(format!(
                    "{}: a block without a language: `text` for a picture or output, else yaml/sh with a marker",
                    b.at()
                ));
                continue;
            }
            let first = b.body.first().map(String::as_str).unwrap_or("");
            let rest = b.body.get(1..).unwrap_or_default();
            if let Some(path) = first.strip_prefix("# from ") {
                counts[0] += 1;
                let path = path.trim();
                let Ok(file) = std::fs::read_to_string(Path::new(ROOT).join(path)) else {
                    problems.push(format!("{}: # from {path}: no such file", b.at()));
                    continue;
                };
                let want = file.trim_end_matches('\n');
                let have = rest.join("\n");
                if have != want {
                    if update {
                        let old = format!("{first}\n{have}\n```");
                        let new = format!("{first}\n{want}\n```");
                        let t = new_text.get_or_insert_with(|| text.clone());
                        *t = t.replacen(&old, &new, 1);
                    } else {
                        problems.push(format!(
                            "{}: differs from {path}; copy it again with VK_DOCS_UPDATE=1 cargo test --test docs",
                            b.at()
                        ));
                    }
                }
            } else if let Some(path) = first.strip_prefix("# in ") {
                counts[1] += 1;
                let path = path.trim();
                let Ok(file) = std::fs::read_to_string(Path::new(ROOT).join(path)) else {
                    problems.push(format!("{}: # in {path}: no such file", b.at()));
                    continue;
                };
                let lines: BTreeSet<&str> = file.lines().map(str::trim).collect();
                for l in rest {
                    let cmd = command_part(l);
                    if !cmd.is_empty() && !lines.contains(cmd) {
                        problems.push(format!("{}: {cmd:?} is not a line of {path}", b.at()));
                    }
                }
            } else if first == RUN_MARKER {
                counts[2] += 1;
            } else if let Some(why) = first.strip_prefix("# untested:") {
                counts[3] += 1;
                if why.trim().len() < 10 {
                    problems.push(format!("{}: # untested: needs a reason", b.at()));
                }
                for script in scripts_called(rest) {
                    if !Path::new(ROOT).join(&script).is_file() {
                        problems.push(format!("{}: calls {script}, which does not exist", b.at()));
                    }
                }
            } else {
                problems.push(format!(
                    "{}: a ```{} block must start with `# from <path>`, `# in <path>`, `{RUN_MARKER}` or `# untested: <why>` (docs/development.md, \"Examples in the docs\")",
                    b.at(),
                    b.lang
                ));
            }
        }
        if let Some(t) = new_text {
            std::fs::write(Path::new(ROOT).join(&page), t).unwrap();
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
    // The docs do show checked examples: whole manifests, CI's commands and
    // the one-machine quick start.
    assert!(counts[0] >= 5, "files copied whole: {counts:?}");
    assert!(counts[1] >= 1 && counts[2] >= 1, "{counts:?}");
}

#[test]
fn image_tags_are_ones_the_build_makes() {
    // scripts/build-images.sh tags localhost/vault-kubernetes-<program>:
    // <version>, -amd64, -arm64 and -multiarch (tests/images.rs checks the
    // images exist under these names); the manifests take ${IMAGE_TAG} from
    // a profile.
    let build = std::fs::read_to_string(format!("{ROOT}/scripts/build-images.sh")).unwrap();
    for suffix in ["-$arch", "-multiarch"] {
        assert!(
            build.contains(&format!("$name{suffix}")),
            "build-images.sh no longer makes $name{suffix}: update this test and the docs"
        );
    }
    let allowed: BTreeSet<String> = ["", "-amd64", "-arm64", "-multiarch"]
        .iter()
        .map(|s| format!("{VERSION}{s}"))
        .chain(["${IMAGE_TAG}".to_string()])
        .collect();
    let mut problems = Vec::new();
    for (page, text) in pages() {
        for (i, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(at) = rest.find("vault-kubernetes-") {
                rest = &rest[at + "vault-kubernetes-".len()..];
                let name_end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || "-_${}".contains(c)))
                    .unwrap_or(rest.len());
                let Some(after) = rest[name_end..].strip_prefix(':') else {
                    continue;
                };
                let tag: String = after
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || "._-${}".contains(*c))
                    .collect();
                if !tag.is_empty() && !allowed.contains(&tag) {
                    problems.push(format!(
                        "{page}:{}: image tag {tag:?}; scripts/build-images.sh makes {allowed:?}",
                        i + 1
                    ));
                }
            }
        }
    }
    // The profiles name images the build makes.
    for profile in ["demo/profile", "demo/local/profile"] {
        let text = std::fs::read_to_string(format!("{ROOT}/{profile}")).unwrap();
        assert!(
            text.lines().any(|l| l == format!("IMAGE_TAG={VERSION}")),
            "{profile}: IMAGE_TAG is not the crate's version {VERSION}"
        );
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// GitHub's anchor of a heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// Targets of the `[text](target)` links of a page's prose.
fn links(text: &str) -> Vec<String> {
    let prose = prose(text);
    let mut out = Vec::new();
    let mut rest = prose.as_str();
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].to_string());
        }
    }
    out
}

#[test]
fn links_resolve_and_every_page_is_linked_from_the_readme() {
    let pages = pages();
    let mut problems = Vec::new();
    let mut linked_from_readme = BTreeSet::new();
    for (page, text) in &pages {
        let dir = Path::new(page).parent().unwrap_or(Path::new(""));
        for target in links(text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            let resolved: PathBuf = if file.is_empty() {
                PathBuf::from(page)
            } else {
                normalize(&dir.join(file))
            };
            let full = Path::new(ROOT).join(&resolved);
            if !full.exists() {
                problems.push(format!("{page}: link to {target}: no such file"));
                continue;
            }
            if page == "README.md" {
                linked_from_readme.insert(resolved.to_string_lossy().into_owned());
            }
            if let Some(anchor) = anchor {
                let text = std::fs::read_to_string(&full).unwrap_or_default();
                if !anchors(&text).contains(anchor) {
                    problems.push(format!("{page}: link to {target}: no such heading"));
                }
            }
        }
    }
    for (page, _) in &pages {
        if page.starts_with("docs/") && !linked_from_readme.contains(page) {
            problems.push(format!("{page} is not linked from the README's Docs list"));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// `docs/../README.md` → `README.md`.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

#[test]
fn the_readme_stays_short() {
    let text = std::fs::read_to_string(format!("{ROOT}/README.md")).unwrap();
    let n = text.lines().count();
    assert!(
        n <= 300,
        "README.md has {n} lines; move details to a page under docs/"
    );
}

/// Stops the stack a snippet started, whatever the snippet did.
struct StackDown(PathBuf);

impl Drop for StackDown {
    fn drop(&mut self) {
        let _ = Command::new(format!("{ROOT}/scripts/stack.sh"))
            .arg("down")
            .env("VK_STACK_DIR", &self.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `# run by tests/docs.rs` blocks, run as written: bash with
/// `set -euo pipefail` from the repository's root, on a stack of their own.
#[test]
fn marked_shell_examples_run_as_written() {
    let snippets: Vec<Block> = pages()
        .iter()
        .flat_map(|(page, text)| blocks(page, text))
        .filter(|b| b.body.first().map(String::as_str) == Some(RUN_MARKER))
        .collect();
    assert!(!snippets.is_empty(), "no block marked {RUN_MARKER}");
    for b in snippets {
        let dir =
            std::env::temp_dir().join(format!("vk-docs-stack-{}-{}", std::process::id(), b.line));
        let _down = StackDown(dir.clone());
        let script = format!("set -euo pipefail\n{}\n", b.body[1..].join("\n"));
        let mut cmd = Command::new("bash");
        cmd.arg("-c").arg(&script).current_dir(ROOT);
        // As from a user's shell: cargo's variables of this test run would
        // make the snippet's cargo rebuild everything (ring's build script
        // reruns when they change).
        #[allow(clippy::disallowed_methods)] // the test's own environment
        let vars = std::env::vars_os();
        for (k, _) in vars {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_MANIFEST_")
                || k.starts_with("CARGO_CRATE_")
                || k.starts_with("CARGO_BIN_")
                || k == "CARGO_PRIMARY_PACKAGE"
                || k == "CARGO_TARGET_TMPDIR"
            {
                cmd.env_remove(&k);
            }
        }
        cmd.env("VK_STACK_DIR", &dir);
        let out = cmd.output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "{}: exit {:?}\n{stdout}\n{stderr}",
            b.at(),
            out.status.code()
        );
        if script.contains("scripts/stack.sh up") {
            // `up` names the directory it was started with in its eval line.
            let eval = stderr
                .lines()
                .find(|l| l.starts_with("eval \"$(VK_STACK_DIR="))
                .unwrap_or_else(|| panic!("{}: no eval line from stack.sh up\n{stderr}", b.at()));
            assert!(eval.contains(&*dir.to_string_lossy()), "{eval}");
        }
        if b.page == "README.md" {
            // The one-machine quick start did what its comments say.
            for line in [
                "successfully stored vault token at",
                "secrets successfully synchronized",
                "create secret alpha from vault secret",
                "token renewed",
                "signal received - stop execution",
            ] {
                assert!(stderr.contains(line), "{}: no {line:?}\n{stderr}", b.at());
            }
            assert_eq!(
                stderr
                    .matches("successfully authenticated to vault")
                    .count(),
                2,
                "Kubernetes auth and AppRole\n{stderr}"
            );
        }
    }
}

/// Every variable the configuration reads (the string literals of
/// `src/config/`, their tests left out) is in docs/configuration.md, as
/// `` `NAME` ``.
#[test]
fn every_variable_the_code_reads_is_in_the_configuration_reference() {
    let reference = std::fs::read_to_string(format!("{ROOT}/docs/configuration.md")).unwrap();
    // Boolean spellings are values, not variables.
    let not_settings = ["TRUE", "FALSE"];
    let mut missing = BTreeSet::new();
    for entry in std::fs::read_dir(format!("{ROOT}/src/config")).unwrap() {
        let path = entry.unwrap().path();
        let src = std::fs::read_to_string(&path).unwrap();
        let code = src.split("#[cfg(test)]").next().unwrap_or_default();
        for quoted in code.split('"').skip(1).step_by(2) {
            let is_name = quoted.len() > 2
                && quoted.starts_with(|c: char| c.is_ascii_uppercase())
                && quoted
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if is_name
                && !not_settings.contains(&quoted)
                && !reference.contains(&format!("`{quoted}`"))
            {
                missing.insert(quoted.to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "read by src/config/ but not in docs/configuration.md: {missing:?}"
    );
}

/// The injector's annotation table (docs/injector.md, "Annotations") lists
/// exactly the `vault-kubernetes.io/` annotations deploy/injector/ reads,
/// and its ConfigMap table exactly the keys of 10-configmap.yaml.
#[test]
fn the_injectors_annotation_table_matches_its_policies() {
    let page = std::fs::read_to_string(format!("{ROOT}/docs/injector.md")).unwrap();
    let mut in_table = false;
    let mut documented = BTreeSet::new();
    for line in page.lines() {
        if line.starts_with("## ") {
            in_table = line == "## Annotations";
        } else if in_table && line.starts_with("| `") {
            documented.insert(line.split('`').nth(1).unwrap_or_default().to_string());
        }
    }
    let mut used = BTreeSet::new();
    for entry in std::fs::read_dir(format!("{ROOT}/deploy/injector")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for (at, _) in text.match_indices("vault-kubernetes.io/") {
            let name: String = text[at + "vault-kubernetes.io/".len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                .collect();
            if !name.is_empty() {
                used.insert(name);
            }
        }
    }
    assert_eq!(
        documented, used,
        "docs/injector.md's annotation table against deploy/injector/"
    );
    // The ConfigMap keys table against the keys of 10-configmap.yaml.
    let mut in_table = false;
    let mut documented = BTreeSet::new();
    for line in page.lines() {
        if line.starts_with("## ") {
            in_table = line.starts_with("## ConfigMap keys");
        } else if in_table && line.starts_with("| `") {
            let cell = line.split('|').nth(1).unwrap_or_default();
            documented.extend(cell.split('`').skip(1).step_by(2).map(str::to_string));
        }
    }
    let configmap =
        std::fs::read_to_string(format!("{ROOT}/deploy/injector/10-configmap.yaml")).unwrap();
    let keys: BTreeSet<String> = configmap
        .lines()
        .skip_while(|l| *l != "data:")
        .filter_map(|l| l.strip_prefix("  ")?.split_once(':'))
        .filter(|(k, _)| k.chars().all(|c| c.is_ascii_alphabetic()))
        .map(|(k, _)| k.to_string())
        .collect();
    assert_eq!(
        documented, keys,
        "docs/injector.md's ConfigMap table against 10-configmap.yaml"
    );
}
