//! The four FROM scratch images, for amd64 and arm64, and their manifest
//! lists: built with buildah by scripts/build-images.sh, checked for size,
//! config and architecture, pushed to an OCI layout the way a registry gets
//! them, and run against the local stack with `buildah run --isolation
//! chroot` as user 65534 in an otherwise empty root (the arm64 images
//! through qemu-aarch64-static mounted into the container).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;
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

/// The amd64 image keeps the plain name it always had (what the cluster
/// imports); the arm64 one has `-arm64`, the manifest list `-multiarch`.
fn image(program: &str) -> String {
    format!("localhost/vault-kubernetes-{program}:{VERSION}")
}

fn image_for(program: &str, arch: &str) -> String {
    match arch {
        "amd64" => image(program),
        _ => format!("{}-{arch}", image(program)),
    }
}

const ARCHES: [&str; 2] = ["amd64", "arm64"];
const PROGRAMS: [&str; 4] = ["authenticator", "synchronizer", "token-renewer", "env"];

fn inspect(image: &str, format: &str) -> String {
    let out = Command::new("buildah")
        .args([
            STORAGE, "inspect", "--type", "image", "--format", format, image,
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs the program's image like a pod container: the service-account
/// directory and a token volume mounted, only `env` set. The arm64 image
/// runs its binary under qemu-aarch64-static (static itself), mounted in.
fn run_image(program: &str, arch: &str, pod: &Pod, env: &[(&str, &str)]) -> Output {
    let ctr = Command::new("buildah")
        .args([STORAGE, "from", "--pull-never", &image_for(program, arch)])
        .output()
        .unwrap();
    // buildah's own stderr (a platform warning for the arm64 image) is not
    // a log line of ours: checked, not recorded for the log scan.
    assert!(
        ctr.status.success(),
        "buildah from: {}",
        String::from_utf8_lossy(&ctr.stderr)
    );
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
    if arch == "arm64" {
        cmd.arg("-v")
            .arg(format!("{}:/qemu-aarch64-static:ro", qemu_aarch64()));
    }
    cmd.arg(&ctr).arg("--");
    if arch == "arm64" {
        cmd.arg("/qemu-aarch64-static");
    }
    cmd.arg(format!("/vault-kubernetes-{program}"));
    let out = cmd.output().unwrap();
    let _ = Command::new("buildah").args([STORAGE, "rm", &ctr]).output();
    out
}

#[test]
fn images_are_small_scratch_non_root_and_of_their_architecture() {
    build();
    for program in PROGRAMS {
        for arch in ARCHES {
            let name = image_for(program, arch);
            assert_eq!(
                inspect(&name, "{{.OCIv1.OS}}/{{.OCIv1.Architecture}}"),
                format!("linux/{arch}")
            );
            assert_eq!(inspect(&name, "{{.OCIv1.Config.User}}"), "65534:65534");
            assert_eq!(
                inspect(&name, "{{.OCIv1.Config.Entrypoint}}"),
                format!("[/vault-kubernetes-{program}]")
            );
            assert_eq!(
                inspect(
                    &name,
                    "{{index .OCIv1.Config.Labels \"org.opencontainers.image.version\"}}"
                ),
                VERSION
            );
            // One layer holding one file.
            assert_eq!(inspect(&name, "{{len .OCIv1.RootFS.DiffIDs}}"), "1");
            let out = Command::new("buildah")
                .args([STORAGE, "images", "--format", "{{.Size}}", &name])
                .output()
                .unwrap();
            // One line per name of the image (the amd64 one has two).
            let shown = String::from_utf8_lossy(&out.stdout);
            let shown = shown.lines().next().unwrap_or_default();
            assert!(
                shown.ends_with("MB")
                    && shown.trim_end_matches(" MB").parse::<f64>().unwrap() < 2.6,
                "{name}: {shown}"
            );
        }
    }
}

/// The file named `digest` ("sha256:...") in an OCI layout's blobs.
fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs").join(digest.replacen(':', "/", 1))
}

fn json_blob(layout: &Path, digest: &str) -> Value {
    serde_json::from_slice(&std::fs::read(blob(layout, digest)).unwrap()).unwrap()
}

#[test]
fn manifest_lists_publish_both_architectures_under_one_name() {
    build();
    const EM_X86_64: u16 = 62;
    const EM_AARCH64: u16 = 183;
    for program in PROGRAMS {
        // What `manifest push --all` sends to a registry, into a local OCI
        // layout instead: the list and both images with their blobs.
        let layout = std::env::temp_dir().join(unique("vk-oci"));
        let out = Command::new("buildah")
            .args([
                STORAGE, "manifest", "push", "--all", "--format", "oci", "--quiet",
            ])
            .arg(format!("{}-multiarch", image(program)))
            .arg(format!("oci:{}:{program}:{VERSION}", layout.display()))
            .output()
            .unwrap();
        assert_ok(&out);
        let index: Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"].as_array().unwrap().len(), 1, "{index}");
        let top = &index["manifests"][0];
        assert_eq!(top["mediaType"], "application/vnd.oci.image.index.v1+json");
        let list = json_blob(&layout, top["digest"].as_str().unwrap());
        let mut seen = Vec::new();
        for entry in list["manifests"].as_array().unwrap() {
            let (os, arch) = (
                entry["platform"]["os"].as_str().unwrap(),
                entry["platform"]["architecture"].as_str().unwrap(),
            );
            seen.push(format!("{os}/{arch}"));
            let manifest = json_blob(&layout, entry["digest"].as_str().unwrap());
            let config = json_blob(&layout, manifest["config"]["digest"].as_str().unwrap());
            assert_eq!(
                (config["os"].as_str(), config["architecture"].as_str()),
                (Some(os), Some(arch)),
                "{program}: config agrees with the list"
            );
            // The one layer carries the binary of that architecture.
            let layers = manifest["layers"].as_array().unwrap();
            assert_eq!(layers.len(), 1);
            let out = Command::new("tar")
                .arg("-xOf")
                .arg(blob(&layout, layers[0]["digest"].as_str().unwrap()))
                .arg(format!("vault-kubernetes-{program}"))
                .output()
                .unwrap();
            assert_ok(&out);
            let machine = u16::from_le_bytes([out.stdout[0x12], out.stdout[0x13]]);
            let expected = if arch == "arm64" {
                EM_AARCH64
            } else {
                EM_X86_64
            };
            assert_eq!(machine, expected, "{program} {arch}: ELF machine");
        }
        seen.sort();
        assert_eq!(seen, ["linux/amd64", "linux/arm64"], "{program}");
        std::fs::remove_dir_all(&layout).unwrap();
    }
}

fn authenticator_then_synchronizer(arch: &str) {
    build();
    let pod = Pod::new(RoleOptions::default());
    let out = run_image("authenticator", arch, &pod, &[]);
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
        arch,
        &pod,
        &[("VAULT_SECRETS", "secret/k8s/first,secret/k8s/folder/")],
    );
    assert_ok(&out);
    assert_eq!(pod.secret_names(), ["alpha", "beta", "first", "gamma"]);
}

#[test]
fn authenticator_then_synchronizer_in_their_images() {
    authenticator_then_synchronizer("amd64");
}

#[test]
fn authenticator_then_synchronizer_in_their_arm64_images() {
    authenticator_then_synchronizer("arm64");
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
    let out = run_image("authenticator", "amd64", &pod, &[]);
    assert!(out.status.success());
    // Renews until the max TTL, then exits 1 with the reason (no VAULT_REAUTH).
    let out = run_image("token-renewer", "amd64", &pod, &[]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("start renewer loop") && log.contains("token renewed"),
        "{log}"
    );
    assert!(log.contains("max TTL"), "{log}");
}
