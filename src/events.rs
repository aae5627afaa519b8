//! Events on the program's own pod (`events.k8s.io/v1`), where `kubectl
//! describe pod` and dashboards show them: the failures of the long-running
//! programs and the few actions a user wants to see. The reasons are in
//! [`Reason`] and docs/events.md.
//!
//! Events are optional: they never make a program fail or wait. A
//! [`Recorder`] hands each report to one thread of its own through a short
//! queue (a full queue drops the report), and that thread sends it through
//! the Kubernetes client, each Event bounded by [`EVENT_WITHIN`]. Without
//! the RBAC to create Events, one warning and no further attempt.
//!
//! Repeats are folded as client-go's recorder does (`tools/events`): the
//! same reason and note on the same pod within [`SERIES_END`] of the last
//! one is one Event whose `series` (`count`, `lastObservedTime`) grows by
//! PATCH. The first repeat is written at once, the next after
//! [`FIRST_GAP`], then after twice the previous gap up to [`MAX_GAP`]: a
//! sidecar failing every second costs one create and a PATCH every few
//! minutes, not an Event per cycle. A series whose Event expired in the
//! API server (`--event-ttl`, 1 h by default) is created again, as
//! client-go does.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::config::EventSettings;
use crate::error::Error;
use crate::kube::KubeClient;
use crate::log;

/// Why an Event was recorded: stable CamelCase names, as Kubernetes'
/// own (`BackOff`, `FailedMount`); users filter and alert on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Warning: a synchronization cycle failed; nothing was pruned.
    SyncFailed,
    /// Normal: managed Secrets (or directories) no longer listed were deleted.
    SecretsPruned,
    /// Normal: a managed Secret edited outside the synchronizer was restored.
    DriftRepaired,
    /// Warning: the token could not be renewed.
    RenewalFailed,
    /// Normal: a new login replaced the token (`VAULT_REAUTH`).
    Reauthenticated,
    /// Warning: the new login failed; the renewer exits.
    ReauthenticationFailed,
    /// Warning: a leased entry (database credentials, certificate) could
    /// not be renewed, issued again or obtained; what was delivered is kept.
    LeaseRenewalFailed,
    /// Normal: a certificate was issued again before it expired.
    CertificateReissued,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::SyncFailed => "SyncFailed",
            Reason::SecretsPruned => "SecretsPruned",
            Reason::DriftRepaired => "DriftRepaired",
            Reason::RenewalFailed => "RenewalFailed",
            Reason::Reauthenticated => "Reauthenticated",
            Reason::ReauthenticationFailed => "ReauthenticationFailed",
            Reason::LeaseRenewalFailed => "LeaseRenewalFailed",
            Reason::CertificateReissued => "CertificateReissued",
        }
    }

    /// The Event's `action`: what was done or tried (required by the API).
    pub fn action(self) -> &'static str {
        match self {
            Reason::SyncFailed => "Synchronize",
            Reason::SecretsPruned => "Prune",
            Reason::DriftRepaired => "Repair",
            Reason::RenewalFailed => "Renew",
            Reason::Reauthenticated | Reason::ReauthenticationFailed => "Authenticate",
            Reason::LeaseRenewalFailed => "RenewLease",
            Reason::CertificateReissued => "Reissue",
        }
    }

    pub fn is_warning(self) -> bool {
        matches!(
            self,
            Reason::SyncFailed
                | Reason::RenewalFailed
                | Reason::ReauthenticationFailed
                | Reason::LeaseRenewalFailed
        )
    }
}

/// Bound of one Event's requests, retries included.
pub const EVENT_WITHIN: Duration = Duration::from_secs(5);
/// How long a dropped recorder waits for the queued Events: the last
/// failure before an exit is worth a short wait, never a long one.
pub const FLUSH_WITHIN: Duration = Duration::from_secs(3);
/// A repeat this long after the last one starts a new Event (client-go's
/// `finishTime`).
pub const SERIES_END: Duration = Duration::from_secs(6 * 60);
/// Wait before the second PATCH of a series; the first is at once.
pub const FIRST_GAP: Duration = Duration::from_secs(15);
/// Longest wait between two PATCHes of a growing series.
pub const MAX_GAP: Duration = Duration::from_secs(5 * 60);
/// The API's limit of `note`, in bytes.
pub const NOTE_LIMIT: usize = 1024;
/// Reports waiting for the thread; more are dropped.
const QUEUE: usize = 32;
/// Series kept in memory; the oldest is forgotten beyond it.
const SERIES: usize = 64;

struct Report {
    reason: Reason,
    note: String,
    at: SystemTime,
}

/// Records Events on the pod, or does nothing when Events are off
/// ([`Recorder::off`], no `POD_NAME`, or no RBAC).
pub struct Recorder {
    queue: Option<SyncSender<Report>>,
    /// Closed by the thread when it ends.
    done: Option<Receiver<()>>,
}

impl Recorder {
    /// A recorder that records nothing.
    pub fn off() -> Recorder {
        Recorder {
            queue: None,
            done: None,
        }
    }

    /// Starts the thread that records the Events of `settings`, or
    /// returns [`Recorder::off`] (with a warning) when it cannot.
    pub fn start(settings: Option<&EventSettings>) -> Recorder {
        let Some(settings) = settings else {
            return Recorder::off();
        };
        let client = match KubeClient::new(&settings.kube) {
            Ok(c) => c,
            Err(e) => {
                log::warn(format!("Events are off: {e}"));
                return Recorder::off();
            }
        };
        let (queue, reports) = mpsc::sync_channel(QUEUE);
        let (finished, done) = mpsc::sync_channel(0);
        let sink = Sink::new(client, settings);
        let spawned = std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                sink.run(reports);
                drop(finished);
            });
        if let Err(e) = spawned {
            log::warn(format!("Events are off: cannot start their thread: {e}"));
            return Recorder::off();
        }
        Recorder {
            queue: Some(queue),
            done: Some(done),
        }
    }

    /// Records `reason` with `note` (the text of the matching log line,
    /// never a secret; cut to [`NOTE_LIMIT`] bytes). Never blocks.
    pub fn report(&self, reason: Reason, note: impl Into<String>) {
        let Some(queue) = &self.queue else { return };
        let report = Report {
            reason,
            note: truncate(note.into(), NOTE_LIMIT),
            at: SystemTime::now(),
        };
        match queue.try_send(report) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {} // a flood: its first reports are there
        }
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::off()
    }
}

impl Drop for Recorder {
    /// Gives the queued Events up to [`FLUSH_WITHIN`] to be written.
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(done) = self.done.take() {
            let _ = done.recv_timeout(FLUSH_WITHIN);
        }
    }
}

/// `s` cut to at most `limit` bytes on a character boundary.
pub fn truncate(mut s: String, limit: usize) -> String {
    if s.len() > limit {
        let mut end = limit;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// One Event in the API server and what is known of it.
struct Series {
    name: String,
    /// The Event as created, to create it again if it expired.
    event: Value,
    /// Occurrences seen, and the count the API server has.
    count: u64,
    written: u64,
    last_seen: Instant,
    last_seen_at: SystemTime,
    last_write: Instant,
    gap: Duration,
}

impl Series {
    fn due(&self, now: Instant) -> Option<Instant> {
        let _ = now;
        (self.count > self.written).then_some(self.last_write + self.gap)
    }
}

struct Sink {
    client: KubeClient,
    pod: String,
    uid: Option<String>,
    controller: &'static str,
    series: HashMap<(Reason, String), Series>,
    /// Off after a 403: one warning, then nothing.
    off: bool,
    /// Whether a failure other than 403 was logged (once).
    failure_logged: bool,
}

impl Sink {
    fn new(client: KubeClient, settings: &EventSettings) -> Sink {
        Sink {
            client,
            pod: settings.pod_name.clone(),
            uid: settings.pod_uid.clone(),
            controller: settings.controller,
            series: HashMap::new(),
            off: false,
            failure_logged: false,
        }
    }

    fn run(mut self, reports: Receiver<Report>) {
        self.check_access();
        loop {
            let now = Instant::now();
            let next = self.series.values().filter_map(|s| s.due(now)).min();
            let received = match next {
                Some(t) => reports.recv_timeout(t.saturating_duration_since(now)),
                None => reports.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match received {
                Ok(report) if !self.off => self.observe(report),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // The program is ending: what is pending, at once.
                    for s in self.series.values_mut() {
                        s.gap = Duration::ZERO;
                    }
                    self.write_due();
                    return;
                }
            }
            self.write_due();
        }
    }

    /// One warning at start when the service account may not create
    /// Events; an error of the check itself leaves Events on.
    fn check_access(&mut self) {
        let deadline = Instant::now() + EVENT_WITHIN;
        if let Ok(false) = self
            .client
            .may("create", "events.k8s.io", "events", deadline)
        {
            self.forbidden();
        }
    }

    fn forbidden(&mut self) {
        self.off = true;
        log::warn(format!(
            "Events are off: the service account may not create events.k8s.io Events in namespace {} (grant create and patch on events, see docs/events.md)",
            self.client.namespace()
        ));
    }

    fn failed(&mut self, e: &Error) {
        match e {
            Error::Api { status: 403, .. } => self.forbidden(),
            Error::Interrupted => {}
            e if !self.failure_logged => {
                self.failure_logged = true;
                log::warn(format!(
                    "an Event could not be recorded (further failures of Events are not logged): {e}"
                ));
            }
            _ => {}
        }
    }

    fn observe(&mut self, report: Report) {
        let now = Instant::now();
        let key = (report.reason, report.note);
        if let Some(s) = self.series.get_mut(&key) {
            if now.saturating_duration_since(s.last_seen) < SERIES_END {
                s.count += 1;
                s.last_seen = now;
                s.last_seen_at = report.at;
                return;
            }
        }
        if self.series.len() >= SERIES {
            if let Some(oldest) = self
                .series
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone())
            {
                self.series.remove(&oldest);
            }
        }
        let (reason, note) = key;
        let name = event_name(&self.pod, report.at);
        let event = self.event(&name, reason, &note, report.at);
        let deadline = Instant::now() + EVENT_WITHIN;
        match self.client.create_event(&event, deadline) {
            Ok(()) => {
                self.series.insert(
                    (reason, note),
                    Series {
                        name,
                        event,
                        count: 1,
                        written: 1,
                        last_seen: now,
                        last_seen_at: report.at,
                        last_write: now,
                        gap: Duration::ZERO,
                    },
                );
            }
            Err(e) => self.failed(&e),
        }
    }

    /// PATCHes the series that are due.
    fn write_due(&mut self) {
        let now = Instant::now();
        let due: Vec<(Reason, String)> = self
            .series
            .iter()
            .filter(|(_, s)| s.due(now).is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if self.off {
                return;
            }
            let Some(s) = self.series.get(&key) else {
                continue;
            };
            let series = json!({"count": s.count, "lastObservedTime": micro_time(s.last_seen_at)});
            let deadline = Instant::now() + EVENT_WITHIN;
            let mut result =
                self.client
                    .patch_event(&s.name, &json!({ "series": series }), deadline);
            if let Err(Error::Api { status: 404, .. }) = result {
                // Expired in the API server: the same Event again, with its series.
                let mut event = s.event.clone();
                event["series"] = series;
                result = self.client.create_event(&event, deadline);
            }
            match result {
                Ok(()) => {
                    if let Some(s) = self.series.get_mut(&key) {
                        s.written = s.count;
                        s.last_write = Instant::now();
                        s.gap = if s.gap.is_zero() {
                            FIRST_GAP
                        } else {
                            (s.gap * 2).min(MAX_GAP)
                        };
                    }
                }
                Err(e) => {
                    // Not retried before the next gap: the count catches up then.
                    if let Some(s) = self.series.get_mut(&key) {
                        s.last_write = Instant::now();
                        s.gap = s.gap.max(FIRST_GAP);
                    }
                    self.failed(&e);
                }
            }
        }
    }

    fn event(&self, name: &str, reason: Reason, note: &str, at: SystemTime) -> Value {
        let namespace = self.client.namespace();
        let mut regarding = json!({
            "apiVersion": "v1", "kind": "Pod", "name": self.pod, "namespace": namespace,
        });
        if let Some(uid) = &self.uid {
            regarding["uid"] = uid.as_str().into();
        }
        json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "eventTime": micro_time(at),
            "reportingController": self.controller,
            // Required by the API; the pod, as client-go's recorder puts the
            // host (kubectl describe's From column shows the controller).
            "reportingInstance": truncate(self.pod.clone(), 128),
            "action": reason.action(),
            "reason": reason.as_str(),
            "type": if reason.is_warning() { "Warning" } else { "Normal" },
            "note": note,
            "regarding": regarding,
        })
    }
}

/// `<pod>.<nanoseconds since the epoch in hex>`, as client-go names
/// Events; the pod part is cut so the name stays a 253-byte DNS subdomain.
fn event_name(pod: &str, at: SystemTime) -> String {
    let nanos = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let suffix = format!(".{nanos:x}");
    let mut pod = truncate(pod.to_string(), 253 - suffix.len());
    while pod.ends_with(['.', '-']) {
        pod.pop();
    }
    pod + &suffix
}

/// Kubernetes' MicroTime: RFC 3339 in UTC with six fractional digits.
pub fn micro_time(at: SystemTime) -> String {
    let d = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (y, mo, day, h, mi, s) = crate::log::civil(d.as_secs());
    format!(
        "{y:04}-{mo:02}-{day:02}T{h:02}:{mi:02}:{s:02}.{:06}Z",
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_time_has_six_digits_in_utc() {
        let t = UNIX_EPOCH + Duration::new(1_795_883_405, 123_456_789);
        assert_eq!(micro_time(t), "2026-11-28T16:30:05.123456Z");
    }

    #[test]
    fn names_stay_dns_subdomains() {
        let t = UNIX_EPOCH + Duration::from_secs(1);
        assert_eq!(event_name("app-0", t), "app-0.3b9aca00");
        let long = vec!["a".repeat(62); 4].join(".");
        let name = event_name(&long, t);
        assert!(name.len() <= 253, "{}", name.len());
        assert!(crate::mapping::is_dns_subdomain(&name), "{name}");
    }

    #[test]
    fn notes_are_cut_on_a_character_boundary() {
        let s = truncate("é".repeat(600), NOTE_LIMIT);
        assert_eq!(s.len(), 1024);
        let s = truncate(format!("a{}", "é".repeat(600)), NOTE_LIMIT);
        assert_eq!(s.len(), 1023);
    }

    #[test]
    fn reasons_are_camel_case_and_within_the_api_limits() {
        use Reason::*;
        for r in [
            SyncFailed,
            SecretsPruned,
            DriftRepaired,
            RenewalFailed,
            Reauthenticated,
            ReauthenticationFailed,
            LeaseRenewalFailed,
            CertificateReissued,
        ] {
            let s = r.as_str();
            assert!(s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric()));
            assert!(s.starts_with(|c: char| c.is_ascii_uppercase()));
            assert!(!r.action().is_empty() && r.action().len() <= 128);
        }
    }

    #[test]
    fn a_recorder_that_is_off_takes_reports() {
        let r = Recorder::off();
        r.report(Reason::SyncFailed, "x");
        drop(r);
    }
}
