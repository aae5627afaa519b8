//! demo/: every manifest is accepted by the real API server (server-side
//! apply, pod security `restricted` without a warning), and
//! demo/vault-setup.sh sets up OpenBao so the binaries work.

mod support;

use std::process::Command;

use support::*;
use vault_kubernetes::http::Method;

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/demo");

fn kubectl() -> String {
    let s = stack();
    format!(
        "{}/kubectl --kubeconfig {}",
        s.get("VK_BIN"),
        s.get("VK_KUBECONFIG")
    )
}

fn profile(namespace: &str, role: &str, mount: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(format!("{DEMO}/profile")).unwrap();
    let text: String = text
        .lines()
        .map(|l| match l.split_once('=') {
            Some(("NAMESPACE", _)) => format!("NAMESPACE={namespace}"),
            Some(("VAULT_ROLE", _)) => format!("VAULT_ROLE={role}"),
            Some(("VAULT_AUTH_MOUNT", _)) => format!("VAULT_AUTH_MOUNT={mount}"),
            _ => l.to_string(),
        })
        .map(|l| l + "\n")
        .collect();
    let path = std::env::temp_dir().join(format!("{namespace}.profile"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn every_manifest_is_accepted_under_restricted_pod_security() {
    let ns = unique("demo");
    let out = Command::new(format!("{DEMO}/deploy.sh"))
        .arg(profile(&ns, "demo", "kubernetes"))
        .env("KUBECTL", kubectl())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(!stderr.contains("Warning"), "{stderr}");
    let s = stack();
    for name in [
        "authenticator",
        "synchronizer",
        "synchronizer-files",
        "token-renewer",
        "token-renewer-native",
    ] {
        let d = s.kube(
            Method::Get,
            &format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}"),
            None,
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["serviceAccountName"],
            "vault-kubernetes"
        );
    }
    let native = s.kube(
        Method::Get,
        &format!("/apis/apps/v1/namespaces/{ns}/deployments/token-renewer-native"),
        None,
    );
    assert_eq!(
        native["spec"]["template"]["spec"]["initContainers"][1]["restartPolicy"],
        "Always"
    );

    // Control: the same API server does warn about a pod that is not restricted.
    let bad = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: bad, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{a: b}}}}\n  template:\n    metadata: {{labels: {{a: b}}}}\n    spec:\n      containers: [{{name: c, image: x}}]\n"
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("{} apply -f -", kubectl()))
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(bad.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("would violate PodSecurity"),
        "control: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = Command::new(format!("{DEMO}/delete.sh"))
        .arg(&ns)
        .env("KUBECTL", kubectl())
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(s
        .try_kube(
            Method::Get,
            &format!("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{ns}-auth-delegator"),
            None
        )
        .is_err());
}

#[test]
fn vault_setup_script_prepares_openbao_for_the_binaries() {
    // A pod whose namespace and account come from our own Pod helper; the
    // script creates the auth mount and role for it.
    let pod = Pod::new(RoleOptions::default());
    let s = stack();
    let mount = unique("demo-k8s");
    let out = Command::new(format!("{DEMO}/vault-setup.sh"))
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("VAULT_CLI", format!("{}/bao", s.get("VK_BIN")))
        .env("VAULT_ADDR", s.get("VAULT_ADDR"))
        .env("VAULT_TOKEN", s.get("VK_VAULT_ROOT_TOKEN"))
        .env("KUBERNETES_HOST", s.get("VK_KUBE_ADDR"))
        .env("KUBERNETES_CA_CERT", s.get("VK_CA_CERT"))
        .env("VAULT_AUTH_MOUNT", &mount)
        .env("VAULT_ROLE", "from-script")
        .env("NAMESPACE", &pod.namespace)
        .env("SERVICE_ACCOUNT", &pod.service_account)
        .output()
        .unwrap();
    assert_ok(&out);
    let env = with(
        &pod.env(),
        &[
            ("VAULT_ROLE", "from-script"),
            ("VAULT_AUTH_MOUNT_PATH", &mount),
        ],
    );
    let out = run(AUTHENTICATOR, env.clone());
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        SYNCHRONIZER,
        with(
            &env,
            &[(
                "VAULT_SECRETS",
                "secret/k8s/first,secret/k8s/second,secret/k8s/folder/,kv1/k8s/first:v1",
            )],
        ),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        pod.secret_names(),
        ["alpha", "beta", "first", "gamma", "second", "v1"]
    );
}
