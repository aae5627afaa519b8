//! The three FROM scratch images: built with buildah by
//! scripts/build-images.sh, checked for size and config, and run against
//! the local stack with `buildah run --isolation chroot` as user 65534 in
//! an otherwise empty root.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::sync::OnceLock;

use support::*;

const STORAGE: &str = "--storage-driver=vfs";
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn build() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-images.sh");
        let out = Command::new(script).output().unwrap();
        assert!(
            out.status.success(),
            "build-images.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

fn image(program: &str) -> String {
    format!("localhost/vault-kubernetes-{program}:{VERSION}")
}

fn inspect(program: &str, format: &str) -> String {
    let out = Command::new("buildah")
        .args([
            STORAGE,
            "inspect",
            "--type",
            "image",
            "--format",
            format,
            &image(program),
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs the program's image like a pod container: the service-account
/// directory and a token volume mounted, only `env` set.
fn run_image(program: &str, pod: &Pod, env: &[(&str, &str)]) -> Output {
    let ctr = Command::new("buildah")
        .args([STORAGE, "from", "--pull-never", &image(program)])
        .output()
        .unwrap();
    assert_ok(&ctr);
    let ctr = String::from_utf8(ctr.stdout).unwrap().trim().to_string();
    let tokens = pod.dir.join("tokens");
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut cmd = Command::new("buildah");
    cmd.args([
        STORAGE,
        "run",
        "--isolation",
        "chroot",
        "--user",
        "65534:65534",
    ]);
    cmd.arg("-v").arg(format!(
        "{}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
        pod.dir.join("sa").display()
    ));
    cmd.arg("-v").arg(format!("{}:/tokens", tokens.display()));
    let s = stack();
    let base = [
        ("VAULT_ADDR", s.get("VAULT_ADDR")),
        ("VAULT_ROLE", pod.role.as_str()),
        ("VAULT_TOKEN_PATH", "/tokens/token"),
        ("KUBERNETES_SERVICE_HOST", s.get("KUBERNETES_SERVICE_HOST")),
        ("KUBERNETES_SERVICE_PORT", s.get("KUBERNETES_SERVICE_PORT")),
    ];
    for (k, v) in base.iter().chain(env) {
        cmd.arg("-e").arg(format!("{k}={v}"));
    }
    cmd.arg(&ctr)
        .arg("--")
        .arg(format!("/vault-kubernetes-{program}"));
    let out = cmd.output().unwrap();
    let _ = Command::new("buildah").args([STORAGE, "rm", &ctr]).output();
    out
}

#[test]
fn images_are_small_scratch_and_non_root() {
    build();
    for program in ["authenticator", "synchronizer", "token-renewer"] {
        assert_eq!(inspect(program, "{{.OCIv1.Config.User}}"), "65534:65534");
        assert_eq!(
            inspect(program, "{{.OCIv1.Config.Entrypoint}}"),
            format!("[/vault-kubernetes-{program}]")
        );
        assert_eq!(
            inspect(
                program,
                "{{index .OCIv1.Config.Labels \"org.opencontainers.image.version\"}}"
            ),
            VERSION
        );
        // One layer holding one file.
        assert_eq!(inspect(program, "{{len .OCIv1.RootFS.DiffIDs}}"), "1");
        let out = Command::new("buildah")
            .args([STORAGE, "images", "--format", "{{.Size}}", &image(program)])
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            shown.ends_with("MB") && shown.trim_end_matches(" MB").parse::<f64>().unwrap() < 2.6,
            "{program}: {shown}"
        );
    }
}

#[test]
fn authenticator_then_synchronizer_in_their_images() {
    build();
    let pod = Pod::new(RoleOptions::default());
    let out = run_image("authenticator", &pod, &[]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("successfully stored vault token at /tokens/token"),
        "{log}"
    );
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(pod.token_path()).unwrap();
    assert_eq!(
        (meta.uid(), meta.mode() & 0o777),
        (65534, 0o640),
        "written by user 65534, 0640"
    );
    assert!(stack()
        .lookup(&std::fs::read_to_string(pod.token_path()).unwrap())
        .is_some());

    let out = run_image(
        "synchronizer",
        &pod,
        &[("VAULT_SECRETS", "secret/k8s/first,secret/k8s/folder/")],
    );
    assert_ok(&out);
    assert_eq!(pod.secret_names(), ["alpha", "beta", "first", "gamma"]);
}

#[test]
fn token_renewer_in_its_image() {
    build();
    // 4 s, not less: on a loaded machine a 2 s token expired between the
    // authenticator's image and the renewer's.
    let pod = Pod::new(RoleOptions {
        ttl: "4s",
        max_ttl: "8s",
        ..Default::default()
    });
    let out = run_image("authenticator", &pod, &[]);
    assert!(out.status.success());
    // Renews until the max TTL, then exits 1 with the reason (no VAULT_REAUTH).
    let out = run_image("token-renewer", &pod, &[]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("start renewer loop") && log.contains("token renewed"),
        "{log}"
    );
    assert!(log.contains("max TTL"), "{log}");
}
