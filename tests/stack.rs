//! The local stack is real: OpenBao's Kubernetes auth reviews JWTs minted by
//! kube-apiserver's TokenRequest API through its TokenReview API.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{mint_jwt, stack, Pod, RoleOptions};
use vault_kubernetes::config::TlsSettings;
use vault_kubernetes::http::{HttpClient, Method, Request, Retry};

fn login(jwt: &str, role: &str) -> Result<Value, vault_kubernetes::Error> {
    let client = HttpClient::new(
        stack().get("VAULT_ADDR"),
        &TlsSettings::default(),
        None,
        Duration::from_secs(30),
        vec![],
    )
    .unwrap();
    let resp = client.send(
        &Request::new(Method::Post, "/v1/auth/kubernetes/login")
            .json(&json!({ "role": role, "jwt": jwt })),
        Retry::Times(0),
    )?;
    Ok(serde_json::from_slice(&resp.body).unwrap())
}

#[test]
fn token_request_jwt_logs_in_and_the_token_works() {
    let pod = Pod::new(RoleOptions::default());
    let jwt = mint_jwt(&pod.namespace, &pod.service_account, None);
    let auth = login(&jwt, &pod.role).unwrap();
    let token = auth["auth"]["client_token"].as_str().unwrap();
    assert_eq!(
        auth["auth"]["metadata"]["service_account_namespace"],
        pod.namespace.as_str()
    );
    let info = stack().lookup(token).expect("token valid");
    assert!(info["policies"]
        .as_array()
        .unwrap()
        .contains(&json!("vk-demo")));
}

#[test]
fn unbound_service_account_is_refused() {
    let pod = Pod::new(RoleOptions::default());
    let s = stack();
    s.kube(
        Method::Post,
        &format!("/api/v1/namespaces/{}/serviceaccounts", pod.namespace),
        Some(json!({"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"other"}})),
    );
    let jwt = mint_jwt(&pod.namespace, "other", None);
    let err = login(&jwt, &pod.role).unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
}

#[test]
fn token_bound_to_a_deleted_object_is_refused() {
    let pod = Pod::new(RoleOptions::default());
    let holder =
        pod.put_secret(json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"holder"}}));
    let jwt = mint_jwt(
        &pod.namespace,
        &pod.service_account,
        Some(
            json!({"kind":"Secret","apiVersion":"v1","name":"holder","uid":holder["metadata"]["uid"]}),
        ),
    );
    login(&jwt, &pod.role).expect("bound token works while its object exists");
    stack().kube(
        Method::Delete,
        &format!("/api/v1/namespaces/{}/secrets/holder", pod.namespace),
        None,
    );
    // The API server checks bound objects through its informer cache: give
    // it a moment to see the deletion.
    let mut last = None;
    for _ in 0..150 {
        match login(&jwt, &pod.role) {
            Err(e) => {
                last = Some(e);
                break;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    let err = last.expect("login still accepted 30s after the bound object was deleted");
    assert_eq!(err.status(), Some(403), "{err}");
}
