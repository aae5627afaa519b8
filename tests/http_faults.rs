//! Faults the real servers cannot produce on demand, from an in-process
//! HTTP server: 5xx and 429 answers in a row, `Retry-After`, 501, and a
//! stalled socket. The real-server side of the same behaviour (a Vault that
//! is down, then up) is in tests/authenticator.rs and tests/renewer.rs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vault_kubernetes::config::TlsSettings;
use vault_kubernetes::http::{HttpClient, Method, Request, Retry};

/// Serves the given answers in order, one per request (the last repeats);
/// `None` holds the connection open without answering.
fn server(answers: Vec<Option<(u16, &'static str)>>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let answer = answers[n.min(answers.len() - 1)];
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let Some((status, extra)) = answer else {
                    std::thread::sleep(Duration::from_secs(30));
                    return;
                };
                let body = r#"{"errors":["injected"]}"#;
                let mut conn = conn;
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    (addr, calls)
}

fn client(addr: &str, timeout: Duration) -> HttpClient {
    HttpClient::new(addr, &TlsSettings::default(), None, timeout, vec![]).unwrap()
}

#[test]
fn server_errors_are_retried_until_success() {
    let (addr, calls) = server(vec![Some((500, "")), Some((503, "")), Some((200, ""))]);
    let resp = client(&addr, Duration::from_secs(5))
        .send(&Request::new(Method::Get, "/v1/x"), Retry::Times(2))
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[test]
fn retries_stop_at_the_limit_with_the_servers_message() {
    let (addr, calls) = server(vec![Some((502, ""))]);
    let err = client(&addr, Duration::from_secs(5))
        .send(&Request::new(Method::Get, "/v1/x"), Retry::Times(2))
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(err.status(), Some(502));
    assert!(err.to_string().ends_with("HTTP 502: injected"), "{err}");
}

#[test]
fn not_implemented_and_client_errors_are_not_retried() {
    for status in [501, 400, 403, 404] {
        let (addr, calls) = server(vec![Some((status, ""))]);
        let err = client(&addr, Duration::from_secs(5))
            .send(&Request::new(Method::Get, "/v1/x"), Retry::Times(2))
            .unwrap_err();
        assert_eq!(err.status(), Some(status));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{status}");
    }
}

#[test]
fn retry_after_is_honoured() {
    let (addr, calls) = server(vec![Some((429, "Retry-After: 2\r\n")), Some((200, ""))]);
    let start = Instant::now();
    client(&addr, Duration::from_secs(5))
        .send(&Request::new(Method::Get, "/v1/x"), Retry::Times(2))
        .unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn a_stalled_server_times_out_and_is_retried() {
    let (addr, calls) = server(vec![None, Some((200, ""))]);
    let start = Instant::now();
    let resp = client(&addr, Duration::from_millis(500))
        .send(&Request::new(Method::Get, "/v1/x"), Retry::Times(1))
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[test]
fn a_deadline_bounds_retries() {
    let (addr, _) = server(vec![Some((503, ""))]);
    let start = Instant::now();
    let err = client(&addr, Duration::from_secs(5))
        .send(
            &Request::new(Method::Get, "/v1/x"),
            Retry::Until(Instant::now() + Duration::from_secs(2)),
        )
        .unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.status(), Some(503));
    assert!(
        took >= Duration::from_millis(1600) && took < Duration::from_secs(4),
        "{took:?}"
    );
}
