//! The HTTP layer shared by the Vault and Kubernetes clients: one `ureq`
//! agent per server, per-request deadlines, bounded bodies, error bodies
//! turned into readable messages, and redirects. Beside it: retries of
//! transient failures ([`retry`]), TLS ([`tls`]), Unix sockets
//! ([`unix_socket`]), `VAULT_RATE_LIMIT` ([`rate_limit`]) and name
//! resolution (`resolve`).
//!
//! # Deadlines and signals
//!
//! Every try has one deadline, the earliest of `VAULT_CLIENT_TIMEOUT` (or
//! the Kubernetes client's 30 s), the caller's [`Request::deadline`] (the
//! renewer passes the token's expiry less a margin, a login its
//! `LOGIN_TIMEOUT`) and, with retries, the retry deadline. It is handed to
//! `ureq` as the call's global timeout, which covers connect, TLS, sending
//! and reading the whole body, so a stalled socket ends at the deadline.
//!
//! A signal must end a stalled request too, within a second, and a socket
//! read cannot be woken by a signal pipe. Once [`crate::signals`] is
//! installed, each try therefore runs on a short-lived worker thread while
//! the calling thread sleeps in `poll(2)` on the signal pipe and on a
//! socket pair the worker closes when done. On a signal the caller gets
//! [`Error::Interrupted`] at once and the worker is abandoned (the process
//! is about to exit; its socket dies with it). Measured: SIGTERM during a
//! request stalled for 60 s ends the renewer and the synchronizer in about
//! 10 ms. We chose this over the alternatives because:
//! - short socket timeouts re-checked against a flag would wake the process
//!   every slice of every request and still cut a slow but live answer,
//!   while `ureq` offers no per-read timeout, only per-phase ones;
//! - an async runtime is against the project's rules;
//! - a thread costs about 30 µs per request and nothing between requests:
//!   the renewer keeps its zero wake-ups while idle.
//!
//! A request that must run after the signal (`revoke-self` on shutdown) is
//! [`Request::uninterruptible`] with a short deadline. Any other request
//! is refused once a signal has arrived: after a signal nothing new starts.
//!
//! # Body limits
//!
//! Each request carries a limit on its answer's size ([`Request::limit`]),
//! chosen from what a valid answer can be. An announced `Content-Length`
//! over it is refused before reading; otherwise reading stops at the limit,
//! so memory never follows a hostile server. An over-limit answer is
//! [`Error::TooLarge`], never retried (the server would send it again).

use std::fmt;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use nix::poll::{poll, PollFd, PollFlags};

use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::DefaultConnector;

use crate::config::{RateLimit, TlsSettings};
use crate::error::{Error, Result};
use crate::time::instant_after;

pub mod rate_limit;
mod resolve;
pub mod retry;
pub mod tls;
pub mod unix_socket;

use self::rate_limit::RateLimiter;
use self::resolve::LiteralResolver;
pub use self::retry::{backoff, retrying, Retry};
use self::unix_socket::{NoResolver, UnixConnector};

/// Answer size limit of a request that sets none: a Kubernetes Secret
/// (1 MiB of data, base64-encoded, plus metadata) fits with room to spare.
pub const DEFAULT_LIMIT: u64 = 4 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

pub struct Request<'a> {
    pub method: Method,
    /// Path and query, starting with `/`.
    pub path: &'a str,
    pub headers: Vec<(&'static str, String)>,
    /// Content type and body; shared, so a try on a worker thread needs
    /// no copy of a large Secret.
    pub body: Option<(&'static str, Arc<Vec<u8>>)>,
    /// Largest answer body accepted, in bytes ([`DEFAULT_LIMIT`] unless set).
    pub limit: u64,
    /// No try runs past this instant, and no retry starts after it.
    pub deadline: Option<Instant>,
    /// Whether a signal abandons it (and refuses it once one came).
    pub interruptible: bool,
    /// Whether a 404 is an answer ([`Response`]) rather than an error.
    pub answer_404: bool,
    /// How long a signal waits for the answer already on its way before
    /// abandoning it ([`Request::finish_after_signal`]).
    pub after_signal: Duration,
}

impl<'a> Request<'a> {
    pub fn new(method: Method, path: &'a str) -> Self {
        Request {
            method,
            path,
            headers: Vec::new(),
            body: None,
            limit: DEFAULT_LIMIT,
            deadline: None,
            interruptible: true,
            answer_404: false,
            after_signal: Duration::ZERO,
        }
    }

    /// On a signal, waits up to `d` for the answer already on its way
    /// instead of abandoning it at once: a login whose token must be
    /// accounted for (revoked on shutdown) rather than left minted and
    /// unknown. The caller still learns of the signal (nothing new starts).
    pub fn finish_after_signal(mut self, d: Duration) -> Self {
        self.after_signal = d;
        self
    }

    /// Returns a 404 as a [`Response`] (status and body), not as an
    /// error, for callers that must read it: Vault's own "no such secret"
    /// (`{"errors":[]}`) is not a namespace that does not exist, a
    /// versioned-path warning or a gateway's page (api-facts.md). Not retried.
    pub fn answer_404(mut self) -> Self {
        self.answer_404 = true;
        self
    }

    /// Largest answer body accepted, in bytes.
    pub fn limit(mut self, bytes: u64) -> Self {
        self.limit = bytes;
        self
    }

    /// Ends every try at `deadline` and starts no retry after it.
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Runs even after SIGTERM/SIGINT (the revoke on shutdown); give it a
    /// short [`Request::deadline`].
    pub fn uninterruptible(mut self) -> Self {
        self.interruptible = false;
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn json(mut self, body: &serde_json::Value) -> Self {
        self.body = Some(("application/json", Arc::new(body.to_string().into_bytes())));
        self
    }

    pub fn body(mut self, content_type: &'static str, body: Vec<u8>) -> Self {
        self.body = Some((content_type, Arc::new(body)));
        self
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json<T: serde::de::DeserializeOwned>(&self, context: impl fmt::Display) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Decode {
            context: context.to_string(),
            reason: format!("unexpected response: {e}"),
        })
    }
}

/// A client for one server (`base_url`).
#[derive(Clone)]
pub struct HttpClient {
    agent: ureq::Agent,
    /// Scheme and authority requests are sent to; with a TLS server name this
    /// carries that name, and the resolver maps it back to the real host.
    base_url: String,
    /// The address as configured, without its password, for messages.
    display_url: String,
    /// ` (through proxy <url without password>)`, added to connection errors
    /// so a refusing proxy is not mistaken for Vault.
    via: Option<Box<str>>,
    /// Follow one 301/302/307 redirect, as Vault's Go client (never from
    /// https to http). Off by default: the API server never redirects.
    follow_redirects: bool,
    limiter: Option<Arc<RateLimiter>>,
    /// Host, port and TLS server name of an https server reached without
    /// proxy and without a client certificate: where to ask, when the
    /// connection is cut, whether the server wants one (see
    /// [`tls::asks_for_client_cert`]).
    mtls_probe: Option<(String, u16, String)>,
    timeout: Duration,
    headers: Vec<(String, String)>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("base_url", &self.display_url)
            .finish()
    }
}

impl HttpClient {
    pub fn new(
        base_url: &str,
        tls: &TlsSettings,
        proxy: Option<&str>,
        timeout: Duration,
        headers: Vec<(String, String)>,
    ) -> Result<Self> {
        let proxy_url = proxy;
        let proxy_shown = proxy.map(crate::url::redact);
        let proxy = proxy
            .map(|p| {
                ureq::Proxy::new(p).map_err(|e| {
                    let p = crate::url::redact(p);
                    Error::Other(format!("invalid proxy address {p:?}: {e}"))
                })
            })
            .transpose()?;
        // Trust roots are read and parsed only when a connection can use
        // TLS: parsing the system CA bundle is most of a plain-HTTP login's
        // start-up time. The default config is never used without TLS.
        let needs_tls = base_url.starts_with("https://")
            || proxy_url.is_some_and(|p| p.starts_with("https://"));
        let tls_config = if needs_tls {
            tls::build(tls)?
        } else {
            ureq::tls::TlsConfig::default()
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls_config)
            .proxy(proxy)
            // Redirects are handled in `Call::run`: ureq would turn a
            // redirected PUT into a GET and could follow https to http.
            .max_redirects(0)
            .user_agent(concat!("vault-kubernetes/", env!("CARGO_PKG_VERSION")))
            .timeout_global(crate::time::timeout_or_none(timeout))
            .build();

        // VAULT_TLS_SERVER_NAME: send requests to that name, so rustls uses
        // it for SNI and verification, and resolve it to the real host.
        let (rename, url) = match &tls.server_name {
            Some(name) if base_url.starts_with("https://") => {
                let mut url = crate::url::Url::parse(base_url, &["https"]).map_err(|e| {
                    let shown = crate::url::redact(base_url);
                    Error::Other(format!("invalid address {shown:?}: {e}"))
                })?;
                let real_host = std::mem::replace(&mut url.host, name.clone());
                (Some((name.clone(), real_host)), url.expose())
            }
            _ => (None, base_url.to_string()),
        };
        let (agent, url) = match crate::url::socket_path(base_url) {
            Some(path) => {
                let connector = UnixConnector { path: path.into() };
                let agent = ureq::Agent::with_parts(config, connector, NoResolver);
                (agent, unix_socket::BASE_URL.to_string())
            }
            None => {
                let resolver = LiteralResolver {
                    rename,
                    inner: DefaultResolver::default(),
                };
                let connector = DefaultConnector::default();
                (ureq::Agent::with_parts(config, connector, resolver), url)
            }
        };
        let mtls_probe = match crate::url::Url::parse(base_url, &["https"]) {
            Ok(u) if tls.client_cert.is_none() && proxy_url.is_none() => {
                let name = tls.server_name.clone().unwrap_or_else(|| u.host.clone());
                Some((u.host, u.port.unwrap_or(443), name))
            }
            _ => None,
        };
        Ok(HttpClient {
            agent,
            mtls_probe,
            base_url: url,
            display_url: crate::url::redact(base_url),
            via: proxy_shown.map(|p| format!(" (through proxy {p})").into()),
            timeout,
            headers,
            follow_redirects: false,
            limiter: None,
        })
    }

    /// Follow one redirect (301, 302, 307) with the same method, headers
    /// and body, as Vault's Go client does unless `VAULT_DISABLE_REDIRECTS`.
    pub fn follow_redirects(mut self, follow: bool) -> Self {
        self.follow_redirects = follow;
        self
    }

    /// Wait before each try so that at most `limit` go out.
    pub fn rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.limiter = limit.map(|l| Arc::new(RateLimiter::new(l)));
        self
    }

    /// Names the variable the address came from in connection errors
    /// (`POST <url> (VAULT_ADDR): ...`), so a wrong address points at what
    /// to fix; before the proxy, if any.
    pub fn naming(mut self, var: &str) -> Self {
        let via = self.via.as_deref().unwrap_or_default();
        self.via = Some(format!(" ({var}){via}").into());
        self
    }

    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    /// Sends `req`, retrying transient failures per `retry` and never past
    /// `req.deadline`. A non-2xx answer becomes [`Error::Api`] with the
    /// server's message.
    pub fn send(&self, req: &Request<'_>, retry: Retry) -> Result<Response> {
        let retry = match (retry, req.deadline) {
            (Retry::Times(n), Some(d)) => Retry::TimesUntil(n, d),
            (Retry::Until(a), Some(b)) => Retry::Until(a.min(b)),
            (r, _) => r,
        };
        retrying(retry, self.timeout, |budget| self.once(req, budget))
    }

    /// One try, within `timeout` and `req.deadline`.
    pub fn once(&self, req: &Request<'_>, timeout: Duration) -> Result<Response> {
        use ureq::http;
        if req.interruptible && crate::signals::received() {
            return Err(Error::Interrupted);
        }
        let mut timeout = timeout;
        if let Some(deadline) = req.deadline {
            timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
        }
        // VAULT_RATE_LIMIT: one token per try; the redirect it may follow
        // is part of the same request, as in Vault's Go client.
        if let Some(limiter) = &self.limiter {
            let started = Instant::now();
            if !req.interruptible {
                // The revoke on shutdown, the program's last request: it
                // waits for its turn (a plain sleep, a signal must not cut
                // it) if that comes within half its bound, else it goes at
                // once. One request over the limit at exit is better than
                // a token left valid.
                if let Ok(wait) = limiter.reserve_within(timeout / 2) {
                    std::thread::sleep(wait);
                }
            } else {
                let wait = limiter.reserve_within(timeout).map_err(|wait| {
                    Error::Other(format!(
                        "{} {}{}: VAULT_RATE_LIMIT allows the next request in {:.1}s, after its deadline",
                        req.method.as_str(),
                        self.display_url,
                        strip_query(req.path),
                        wait.as_secs_f64()
                    ))
                })?;
                if !wait.is_zero() && crate::signals::sleep(wait) {
                    return Err(Error::Interrupted);
                }
            }
            timeout = timeout.saturating_sub(started.elapsed());
        }
        let timeout = timeout.max(Duration::from_millis(1));
        let url = format!("{}{}", self.base_url, req.path);
        let context = format!(
            "{} {}{}",
            req.method.as_str(),
            self.display_url,
            strip_query(req.path)
        );
        let mut builder = http::Request::builder()
            .method(req.method.as_str())
            .uri(&url);
        for (k, v) in &self.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        for (k, v) in &req.headers {
            builder = builder.header(*k, v.as_str());
        }
        let body = match &req.body {
            Some((content_type, body)) => {
                builder = builder.header("Content-Type", *content_type);
                body.clone()
            }
            None => Arc::default(),
        };
        let request = builder
            .body(())
            .map_err(|e| Error::Other(format!("{context}: invalid request: {e}")))?;
        let call = Call {
            agent: self.agent.clone(),
            request,
            body,
            timeout,
            accept: Accept {
                limit: req.limit,
                answer_404: req.answer_404,
            },
            context,
            via: self.via.as_deref().unwrap_or_default().to_string(),
            follow_redirects: self.follow_redirects,
            after_signal: req.after_signal,
        };
        let context = call.context.clone();
        let result = if req.interruptible {
            call.run_interruptible()
        } else {
            call.run()
        };
        match result {
            Err(e) if self.refused_for_want_of_a_certificate(&e) => Err(Error::Other(format!(
                "{context}: the server asks for a client certificate (mTLS) and none is \
                 configured: set VAULT_CLIENT_CERT and VAULT_CLIENT_KEY (not retried)"
            ))),
            other => other,
        }
    }

    /// Whether `e` is a connection the server cut (right after the
    /// handshake: a broken pipe, a reset, an alert) because it wants a
    /// client certificate we do not have. Asked only then, and answered
    /// within a second.
    fn refused_for_want_of_a_certificate(&self, e: &Error) -> bool {
        use std::io::ErrorKind;
        use std::net::ToSocketAddrs;
        let Some((host, port, name)) = &self.mtls_probe else {
            return false;
        };
        let Error::Transport { source, .. } = e else {
            return false;
        };
        // An alert from the server, not our own verdict on its certificate
        // (that one is reported as it is).
        let alert = |e: &rustls::Error| matches!(e, rustls::Error::AlertReceived(_));
        let cut = match &**source {
            ureq::Error::Io(io) => {
                matches!(
                    io.kind(),
                    ErrorKind::BrokenPipe
                        | ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::UnexpectedEof
                ) || io
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<rustls::Error>())
                    .is_some_and(alert)
            }
            ureq::Error::Rustls(e) => alert(e),
            _ => false,
        };
        let Some(addr) = cut
            .then(|| (host.as_str(), *port).to_socket_addrs().ok()?.next())
            .flatten()
        else {
            return false;
        };
        tls::asks_for_client_cert(addr, name, Duration::from_secs(1))
    }
}

/// One try, owning everything so it can run on a worker thread.
struct Call {
    agent: ureq::Agent,
    request: ureq::http::Request<()>,
    body: Arc<Vec<u8>>,
    timeout: Duration,
    accept: Accept,
    context: String,
    /// ` (through proxy ...)` for connection errors, or empty.
    via: String,
    follow_redirects: bool,
    after_signal: Duration,
}

/// What an exchange accepts as an answer: bodies up to `limit` bytes,
/// statuses 2xx (and 404 with `answer_404`).
#[derive(Clone, Copy)]
struct Accept {
    limit: u64,
    answer_404: bool,
}

/// The same request again (for a redirect): `http::Request` is not `Clone`.
fn copy_request(r: &ureq::http::Request<()>) -> ureq::http::Request<()> {
    let mut copy = ureq::http::Request::new(());
    *copy.method_mut() = r.method().clone();
    *copy.uri_mut() = r.uri().clone();
    *copy.headers_mut() = r.headers().clone();
    copy
}

impl Call {
    /// Sends the request and follows at most one redirect when enabled.
    fn run(self) -> Result<Response> {
        let started = Instant::now();
        let again = self.follow_redirects.then(|| copy_request(&self.request));
        let (agent, timeout, accept, via) = (self.agent, self.timeout, self.accept, self.via);
        let body = self.body;
        let (result, location) = exchange(
            &agent,
            self.request,
            &body,
            timeout,
            accept,
            &self.context,
            &via,
        )?;
        let (Some(location), Some(mut again)) = (location, again) else {
            return result;
        };
        let status = result.as_ref().err().and_then(Error::status);
        if !matches!(status, Some(301 | 302 | 307)) {
            return result;
        }
        let refused = |why: String| Error::Api {
            context: self.context.clone(),
            status: status.unwrap_or_default(),
            message: why,
            retry_after: None,
        };
        let target = redirect_target(&again.uri().to_string(), &location).map_err(refused)?;
        *again.uri_mut() = target
            .parse()
            .map_err(|_| refused(format!("invalid redirect location {location:?}")))?;
        // A relative Location keeps VAULT_ADDR's user:password: hide it.
        let shown = crate::url::redact(strip_query(&target));
        let context = format!("{} (redirected to {shown})", self.context);
        let left = timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1));
        exchange(&agent, again, &body, left, accept, &context, &via)?.0
    }
}

/// One HTTP exchange: the answer (an error for non-2xx) and, for a 3xx,
/// its `Location`.
fn exchange(
    agent: &ureq::Agent,
    request: ureq::http::Request<()>,
    body: &[u8],
    timeout: Duration,
    accept: Accept,
    context: &str,
    via: &str,
) -> Result<(Result<Response>, Option<String>)> {
    let context = context.to_string();
    let transport = |e: ureq::Error| Error::Transport {
        context: context.clone(),
        source: Box::new(e),
    };
    let request = request.map(|()| body);
    let request = ureq::RequestExt::with_agent(request, agent)
        .configure()
        .timeout_global(crate::time::timeout_or_none(timeout))
        .allow_non_standard_methods(true)
        .build();
    let mut resp = request.run().map_err(|e| Error::Transport {
        context: format!("{context}{via}"),
        source: Box::new(e),
    })?;
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry::retry_after(v, SystemTime::now()));
    let location = resp
        .status()
        .is_redirection()
        .then(|| resp.headers().get("location"))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let limit = accept.limit;
    let too_large = |size| Error::TooLarge {
        context: context.clone(),
        limit,
        size,
    };
    if let Some(size) = header("content-length").filter(|n| *n > limit) {
        return Err(too_large(Some(size)));
    }
    let body = match resp.body_mut().with_config().limit(limit).read_to_vec() {
        Ok(body) => body,
        Err(ureq::Error::BodyExceedsLimit(_)) => return Err(too_large(None)),
        Err(e) => return Err(transport(e)),
    };
    if (200..300).contains(&status) || (status == 404 && accept.answer_404) {
        return Ok((Ok(Response { status, body }), None));
    }
    let message = match &location {
        Some(to) => format!(
            "redirected to {}, not followed",
            crate::url::redact(strip_query(to))
        ),
        None => error_message(&body),
    };
    Ok((
        Err(Error::Api {
            context,
            status,
            message,
            retry_after,
        }),
        location,
    ))
}

impl Call {
    /// [`Call::run`] on a worker thread while this one waits in `poll` on
    /// the signal pipe (see the module doc).
    fn run_interruptible(self) -> Result<Response> {
        let Some(signal) = crate::signals::fd() else {
            return self.run();
        };
        let (done_rx, done_tx) = UnixStream::pair()
            .map_err(|e| Error::io(format!("{}: create a socket pair", self.context), e))?;
        let (tx, rx) = mpsc::sync_channel(1);
        let context = self.context.clone();
        let after_signal = self.after_signal;
        // ureq's own timeout ends the worker; the slack only covers a worker
        // that somehow overruns it.
        let until = instant_after(
            Instant::now(),
            self.timeout.saturating_add(Duration::from_secs(1)),
        );
        std::thread::Builder::new()
            .name("request".into())
            .spawn(move || {
                let _ = tx.send(self.run());
                drop(done_tx); // wakes the waiting thread
            })
            .map_err(|e| Error::io(format!("{context}: start a request thread"), e))?;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let mut fds = [
                PollFd::new(signal, PollFlags::POLLIN),
                PollFd::new(done_rx.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, crate::signals::poll_timeout(left)) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::Other(format!("{context}: poll: {e}"))),
                Ok(0) => {
                    return Err(Error::Transport {
                        context,
                        source: Box::new(ureq::Error::Timeout(ureq::Timeout::Global)),
                    })
                }
                Ok(_) => {}
            }
            if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                return rx
                    .recv()
                    .unwrap_or_else(|_| Err(Error::Other(format!("{context}: request failed"))));
            }
            if crate::signals::received() {
                // The answer on its way, if asked for and it comes in time
                // (the signal pipe stays readable: poll the worker alone).
                let end = instant_after(Instant::now(), after_signal).min(until);
                let mut fds = [PollFd::new(done_rx.as_fd(), PollFlags::POLLIN)];
                while !after_signal.is_zero() {
                    let left = end.saturating_duration_since(Instant::now());
                    match poll(&mut fds, crate::signals::poll_timeout(left)) {
                        Err(nix::errno::Errno::EINTR) => continue,
                        Ok(n) if n > 0 => {
                            return rx.recv().unwrap_or(Err(Error::Interrupted));
                        }
                        _ => break,
                    }
                }
                return Err(Error::Interrupted);
            }
        }
    }
}

/// The absolute URL a `Location` points to from `from`; a redirect from
/// https to anything else is refused, as Vault's Go client does, so a token
/// never travels in clear text.
fn redirect_target(from: &str, location: &str) -> std::result::Result<String, String> {
    let target = if location.contains("://") {
        location.to_string()
    } else if location.starts_with('/') && !location.starts_with("//") {
        let scheme_end = from.find("://").map_or(0, |i| i + 3);
        let origin_end = from[scheme_end..]
            .find('/')
            .map_or(from.len(), |i| scheme_end + i);
        format!("{}{location}", &from[..origin_end])
    } else {
        return Err(format!("unsupported redirect location {location:?}"));
    };
    if from.starts_with("https://") && !target.starts_with("https://") {
        return Err(format!(
            "redirect to {} refused: it would downgrade https",
            crate::url::redact(strip_query(&target))
        ));
    }
    if !(target.starts_with("https://") || target.starts_with("http://")) {
        return Err(format!("unsupported redirect location {location:?}"));
    }
    Ok(target)
}

/// Query strings may carry names but never secrets; still, keep messages short.
fn strip_query(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

/// Vault's `{"errors":[...]}` or a Kubernetes `Status` `message`, else the
/// start of the body.
fn error_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(errors) = v.get("errors").and_then(|e| e.as_array()) {
            return errors
                .iter()
                .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join("; ");
        }
        if let Some(msg) = v.get("message").and_then(|m| m.as_str()) {
            return msg.to_string();
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_and_never_downgrade() {
        let from = "https://a:8200/v1/auth/kubernetes/login";
        assert_eq!(
            redirect_target(from, "https://b:8200/v1/x").unwrap(),
            "https://b:8200/v1/x"
        );
        assert_eq!(
            redirect_target(from, "/v1/y?z").unwrap(),
            "https://a:8200/v1/y?z"
        );
        assert!(redirect_target(from, "http://b:8200/v1/x")
            .unwrap_err()
            .contains("downgrade"));
        assert!(redirect_target(from, "ftp://b/x").is_err());
        assert!(redirect_target(from, "x").is_err());
        assert_eq!(
            redirect_target("http://a:8200/v1/x", "https://b/v1/x").unwrap(),
            "https://b/v1/x"
        );
    }

    #[test]
    fn error_messages_are_extracted() {
        assert_eq!(
            error_message(br#"{"errors":["permission denied"]}"#),
            "permission denied"
        );
        assert_eq!(
            error_message(br#"{"kind":"Status","message":"secrets \"x\" not found"}"#),
            "secrets \"x\" not found"
        );
        assert_eq!(error_message(b"oops\n"), "oops");
    }
}
