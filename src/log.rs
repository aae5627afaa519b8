//! One line per event on stderr, in the Go tools' format
//! (`YYYY/MM/DD HH:MM:SS message`) or, with `LOG_FORMAT=json`, one JSON
//! object per line. Times are UTC: a `FROM scratch` image has no time zone
//! database, and UTC lines sort the same on every node.
//!
//! Callers pass finished messages; nothing here knows about tokens, so no
//! caller may format a token, JWT or secret value into a message.

use std::io::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Go's `log` package layout. The default, so log scrapers keep working.
    Text,
    /// `{"time":"...","level":"...","msg":"..."}`.
    Json,
}

static FORMAT: OnceLock<Format> = OnceLock::new();

/// Sets the format once at start; later calls are ignored.
pub fn init(format: Format) {
    let _ = FORMAT.set(format);
}

#[derive(Clone, Copy, Debug)]
pub enum Level {
    Info,
    Warn,
    /// A warning whose text is a Go tool's line users match on: level
    /// `warning` in JSON, but no `WARNING: ` prefix in text.
    WarnVerbatim,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn | Level::WarnVerbatim => "warning",
            Level::Error => "error",
        }
    }
}

pub fn info(msg: impl AsRef<str>) {
    write(Level::Info, msg.as_ref());
}

/// Warnings keep the Go tool's `WARNING: ` prefix in text format.
pub fn warn(msg: impl AsRef<str>) {
    write(Level::Warn, msg.as_ref());
}

/// A warning printed exactly as given, for the Go tools' own lines.
pub fn warn_verbatim(msg: impl AsRef<str>) {
    write(Level::WarnVerbatim, msg.as_ref());
}

pub fn error(msg: impl AsRef<str>) {
    write(Level::Error, msg.as_ref());
}

fn write(level: Level, msg: &str) {
    let line = render(
        *FORMAT.get().unwrap_or(&Format::Text),
        level,
        SystemTime::now(),
        msg,
    );
    // One write call per line keeps lines whole when threads log at once.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

fn render(format: Format, level: Level, now: SystemTime, msg: &str) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, mo, d, h, mi, s) = civil(secs);
    match format {
        Format::Text => {
            let prefix = match level {
                Level::Warn if !msg.starts_with("WARNING") => "WARNING: ",
                _ => "",
            };
            let msg = one_line(msg);
            format!("{y:04}/{mo:02}/{d:02} {h:02}:{mi:02}:{s:02} {prefix}{msg}\n")
        }
        Format::Json => format!(
            "{{\"time\":\"{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z\",\"level\":\"{}\",\"msg\":{}}}\n",
            level.as_str(),
            serde_json::Value::from(msg)
        ),
    }
}

/// Messages carry text from outside (server errors, paths, names), and
/// OpenBao's own errors span lines: control characters and Unicode line
/// separators are escaped so one event stays one line and no server can
/// forge a line of ours. JSON escapes them by construction.
pub fn one_line(msg: &str) -> std::borrow::Cow<'_, str> {
    let odd = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    if !msg.contains(odd) {
        return msg.into();
    }
    let mut out = String::with_capacity(msg.len() + 8);
    for c in msg.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if odd(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.into()
}

/// Seconds since the epoch to UTC calendar fields (Howard Hinnant's
/// days-from-civil inverse), to avoid a date crate for one line.
pub(crate) fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn text_matches_go_log_layout() {
        // 2026-11-28 16:30:05 UTC
        let t = UNIX_EPOCH + Duration::from_secs(1_795_883_405);
        assert_eq!(
            render(Format::Text, Level::Info, t, "start renewer loop"),
            "2026/11/28 16:30:05 start renewer loop\n"
        );
        assert_eq!(
            render(Format::Text, Level::Warn, t, "x"),
            "2026/11/28 16:30:05 WARNING: x\n"
        );
    }

    #[test]
    fn outside_text_stays_on_one_line() {
        let t = UNIX_EPOCH;
        let forged = "1 error occurred:\n\t* permission denied\r\n1970/01/01 00:00:00 token renewed\u{1b}[2J\u{2028}";
        let line = render(Format::Text, Level::Error, t, forged);
        assert_eq!(
            line,
            "1970/01/01 00:00:00 1 error occurred:\\n\\t* permission denied\\r\\n1970/01/01 00:00:00 token renewed\\u{1b}[2J\\u{2028}\n"
        );
        let line = render(Format::Json, Level::Error, t, forged);
        assert_eq!(line.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["msg"], forged);
    }

    #[test]
    fn json_is_one_object_per_line() {
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        let line = render(Format::Json, Level::Error, t, "a \"quoted\" msg");
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2000-02-29T00:00:00Z");
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "a \"quoted\" msg");
    }
}
