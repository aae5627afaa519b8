//! The synchronizer's file target (`SYNCHRONIZER_TARGET_DIR`): each Secret
//! of the plan becomes a directory under the target directory, laid out
//! like a Secret volume the kubelet mounts, so applications that read
//! mounted Secrets (and watch them with inotify) work unchanged, and the
//! values never reach the API server or etcd.
//!
//! ```text
//! <target>/.vault-kubernetes.json         what we created: name -> Vault path
//! <target>/<name>/..2026_11_29_15_04_05.123456789/<key>   the files (mode 0440)
//! <target>/<name>/..data -> ..2026_11_29_15_04_05.123456789
//! <target>/<name>/<key>  -> ..data/<key>
//! ```
//!
//! A change follows the kubelet's AtomicWriter: write a new timestamped
//! directory, point a `..data_tmp` link at it and rename that over `..data`
//! (one atomic step: a reader that resolves `..data` once sees the old or
//! the new secret, never a mix), add missing `<key>` links (so a visible
//! key is always readable), then drop stale `<key>` links and the old
//! directory. An unchanged secret (same
//! keys, bytes, mode and owner) is not written.
//!
//! Only what the manifest lists is ours: a directory we did not create is
//! left alone with a warning, and pruning removes only the entries this
//! layout creates (`..data`, `..data_tmp`, `..<timestamp>` directories,
//! links into `..data`), keeping anything else.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::parallel::parallel;
use super::plan::{Desired, Plan, Summary};
use crate::config::FilesSettings;
use crate::error::{Error, Result};
use crate::fs::{create_file, sync_dir};
use crate::log;
use crate::mapping::is_dns_subdomain;

/// The record of the directories we created, in the target directory.
/// Secret names are DNS subdomains, so they never begin with a dot.
pub const MANIFEST: &str = ".vault-kubernetes.json";
const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Contents of [`MANIFEST`]: Secret name to the Vault path it comes from.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Manifest {
    secrets: BTreeMap<String, String>,
}

pub struct FileTarget {
    settings: FilesSettings,
    /// An exclusive `flock` on the target directory, taken at the first
    /// write and held until the process exits (see [`FileTarget::lock`]);
    /// `Some(None)` where the file system has no locks.
    lock: OnceLock<Option<Flock<fs::File>>>,
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Created,
    Updated,
    Unchanged,
}

impl FileTarget {
    pub fn new(settings: &FilesSettings) -> Self {
        FileTarget {
            settings: settings.clone(),
            lock: OnceLock::new(),
        }
    }

    /// One synchronizer per target directory: a second one with another
    /// mapping would prune the first one's directories (and it the
    /// second's), and their record writes would overwrite each other. The
    /// lock is released when the process exits, so an init container
    /// followed by a sidecar works; two at the same time do not.
    fn lock(&self) -> Result<()> {
        if self.lock.get().is_some() {
            return Ok(());
        }
        // A file system without locks (some network ones) or a target we
        // may write but not read: the guard is against misuse, not needed
        // to write; say so once.
        let unlocked = |why: String| {
            log::warn(format!(
                "cannot lock {} ({why}): nothing stops a second synchronizer there",
                self.dir().display()
            ));
            let _ = self.lock.set(None);
            Ok(())
        };
        let dir = match fs::File::open(self.dir()) {
            Ok(dir) => dir,
            Err(e) => return unlocked(e.to_string()),
        };
        match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                let _ = self.lock.set(Some(lock));
                Ok(())
            }
            Err((_, Errno::EWOULDBLOCK)) => Err(Error::Other(format!(
                "target directory {} is in use by another synchronizer (SYNCHRONIZER_TARGET_DIR); \
                 give each synchronizer its own directory",
                self.dir().display()
            ))),
            Err((_, e)) => unlocked(e.to_string()),
        }
    }

    fn dir(&self) -> &Path {
        &self.settings.dir
    }

    fn check_dir(&self) -> Result<()> {
        if self.dir().is_dir() {
            return Ok(());
        }
        Err(Error::Other(format!(
            "target directory {} does not exist (SYNCHRONIZER_TARGET_DIR); mount a volume there",
            self.dir().display()
        )))
    }

    fn read_manifest(&self) -> Result<Manifest> {
        let path = self.dir().join(MANIFEST);
        match fs::read(&path) {
            Ok(bytes) => {
                // Without the record we cannot tell ours from others': stop.
                let decode = |reason: String| Error::Decode {
                    context: format!("read {}", path.display()),
                    reason,
                };
                let manifest: Manifest =
                    serde_json::from_slice(&bytes).map_err(|e| decode(e.to_string()))?;
                // A tampered record must not lead prune out of the target
                // (`..`, `/etc`, `a/b`): only Secret names, as we write them.
                match manifest.secrets.keys().find(|n| !is_dns_subdomain(n)) {
                    Some(bad) => Err(decode(format!(
                        "{bad:?} is not a Secret name (lower-case RFC 1123 subdomain)"
                    ))),
                    None => Ok(manifest),
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Manifest::default()),
            Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
        }
    }

    /// Atomically (temporary file, fsync, rename, fsync of the directory).
    fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        let path = self.dir().join(MANIFEST);
        let tmp = self.dir().join(format!("{MANIFEST}.tmp"));
        let body = serde_json::to_vec_pretty(manifest).expect("a map of strings serializes");
        let _ = fs::remove_file(&tmp);
        create_file(&tmp, 0o644, None, None, &body)?;
        fs::rename(&tmp, &path).map_err(|e| Error::io(format!("rename {}", tmp.display()), e))?;
        sync_dir(self.dir())
    }

    /// Writes the plan: every secret, then (if all succeeded) prunes the
    /// directories of the manifest no longer in the plan.
    pub fn apply(&self, plan: &Plan, prune: bool) -> Result<Summary> {
        self.check_dir()?;
        self.lock()?;
        let mut manifest = self.read_manifest()?;
        let mut summary = Summary {
            not_found: plan.not_found.len(),
            ..Summary::default()
        };
        // Record new names before creating anything, so a crash in between
        // can leave only recorded directories behind.
        let mut ours = Vec::new();
        let mut recorded = false;
        for want in &plan.secrets {
            let dir = self.dir().join(&want.name);
            if !manifest.secrets.contains_key(&want.name) {
                if fs::symlink_metadata(&dir).is_ok() {
                    log::warn(format!(
                        "ignoring directory {} - not managed by synchronizer",
                        dir.display()
                    ));
                    summary.ignored += 1;
                    continue;
                }
                recorded = true;
            }
            manifest
                .secrets
                .insert(want.name.clone(), want.vault_path.clone());
            ours.push(want);
        }
        if recorded {
            self.write_manifest(&manifest)?;
        }

        // In parallel: each secret is fsynced on its own, which dominates on disk.
        let results = parallel(&ours, |want| self.write_secret(want));
        let mut errors = Vec::new();
        for (want, result) in ours.iter().zip(results) {
            match result {
                Ok(Outcome::Created) => summary.created += 1,
                Ok(Outcome::Updated) => summary.updated += 1,
                Ok(Outcome::Unchanged) => summary.unchanged += 1,
                Err(e) => errors.push(format!("secret {}: {e}", want.name)),
            }
        }
        if !errors.is_empty() {
            return Err(Error::Other(format!(
                "synchronization incomplete, nothing pruned: {}",
                errors.join("; ")
            )));
        }

        if prune {
            let keep = plan.names();
            let stale: Vec<String> = manifest
                .secrets
                .keys()
                .filter(|n| !keep.contains(n.as_str()))
                .cloned()
                .collect();
            for name in stale {
                let dir = self.dir().join(&name);
                remove_secret_dir(&dir)?;
                manifest.secrets.remove(&name);
                self.write_manifest(&manifest)?;
                log::info(format!("delete directory {}", dir.display()));
                summary.deleted += 1;
            }
        }
        Ok(summary)
    }

    fn write_secret(&self, want: &Desired) -> Result<Outcome> {
        let dir = self.dir().join(&want.name);
        let io = |what: &str, path: &Path, e| Error::io(format!("{what} {}", path.display()), e);
        let created = match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => false,
            Ok(_) => {
                return Err(Error::Other(format!(
                    "{} exists and is not a directory",
                    dir.display()
                )))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                fs::create_dir(&dir).map_err(|e| io("create", &dir, e))?;
                set_dir_mode(&dir)?;
                true
            }
            Err(e) => return Err(io("inspect", &dir, e)),
        };
        let old = match fs::read_link(dir.join(DATA)) {
            Ok(target) => Some(target),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(io("read link", &dir.join(DATA), e)),
        };
        if let Some(old) = &old {
            if self.is_current(&dir, old, &want.data)? {
                return Ok(Outcome::Unchanged);
            }
        }

        let ts = new_timestamp_dir(&dir)?;
        let result = self.populate(&dir, &ts, &want.data);
        if let Err(e) = result {
            let _ = fs::remove_dir_all(dir.join(&ts));
            return Err(e);
        }
        // The atomic step: `..data` now names the new directory.
        let tmp = dir.join(DATA_TMP);
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&ts, &tmp).map_err(|e| io("create link", &tmp, e))?;
        fs::rename(&tmp, dir.join(DATA)).map_err(|e| io("rename", &tmp, e))?;
        Self::link_keys(&dir, &want.data)?;
        sync_dir(&dir)?;

        // Clean-up of what the old version had: stale key links, old data.
        for entry in fs::read_dir(&dir).map_err(|e| io("read", &dir, e))? {
            let entry = entry.map_err(|e| io("read", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(key) = link_key(&entry.path()) {
                if !want.data.contains_key(&key) {
                    fs::remove_file(entry.path()).map_err(|e| io("remove", &entry.path(), e))?;
                }
            } else if is_timestamp_dir(&name) && Path::new(&name) != ts {
                fs::remove_dir_all(entry.path()).map_err(|e| io("remove", &entry.path(), e))?;
            }
        }
        let verb = if created || old.is_none() {
            "create"
        } else {
            "update"
        };
        log::info(format!(
            "{verb} directory {} from vault secret {}",
            dir.display(),
            want.vault_path
        ));
        Ok(if verb == "create" {
            Outcome::Created
        } else {
            Outcome::Updated
        })
    }

    /// Writes the files into the new timestamped directory `ts` and checks
    /// that every `<key>` is absent or already our link (so a conflict stops
    /// before the swap, changing nothing).
    fn populate(&self, dir: &Path, ts: &Path, data: &BTreeMap<String, Vec<u8>>) -> Result<()> {
        let s = &self.settings;
        for (key, value) in data {
            create_file(&dir.join(ts).join(key), s.mode, s.uid, s.gid, value)?;
        }
        sync_dir(&dir.join(ts))?;
        for key in data.keys() {
            let link = dir.join(key);
            match fs::symlink_metadata(&link) {
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                _ if link_key(&link).as_deref() == Some(key) => {}
                _ => {
                    return Err(Error::Other(format!(
                        "{} exists and is not the synchronizer's link to {DATA}/{key}",
                        link.display()
                    )))
                }
            }
        }
        Ok(())
    }

    /// Adds the missing `<key> -> ..data/<key>` links, after the swap as
    /// the kubelet does: a key that is visible is always readable.
    fn link_keys(dir: &Path, data: &BTreeMap<String, Vec<u8>>) -> Result<()> {
        for key in data.keys() {
            let link = dir.join(key);
            if link_key(&link).as_deref() != Some(key) {
                std::os::unix::fs::symlink(Path::new(DATA).join(key), &link)
                    .map_err(|e| Error::io(format!("create link {}", link.display()), e))?;
            }
        }
        Ok(())
    }

    /// Whether the directory already holds exactly `data`: same keys and
    /// bytes, our mode and owner, every key link present, none stale.
    fn is_current(&self, dir: &Path, ts: &Path, data: &BTreeMap<String, Vec<u8>>) -> Result<bool> {
        let s = &self.settings;
        let io = |path: &Path, e| Error::io(format!("read {}", path.display()), e);
        let data_dir = dir.join(ts);
        let mut seen = 0;
        let entries = match fs::read_dir(&data_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io(&data_dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io(&data_dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(want) = data.get(&name) else {
                return Ok(false);
            };
            let meta = entry.metadata().map_err(|e| io(&entry.path(), e))?;
            if !meta.is_file()
                || meta.mode() & 0o7777 != s.mode
                || s.uid.is_some_and(|u| u != meta.uid())
                || s.gid.is_some_and(|g| g != meta.gid())
                || meta.len() != want.len() as u64
                || fs::read(entry.path()).map_err(|e| io(&entry.path(), e))? != *want
            {
                return Ok(false);
            }
            seen += 1;
        }
        if seen != data.len() {
            return Ok(false);
        }
        for entry in fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let entry = entry.map_err(|e| io(dir, e))?;
            if let Some(key) = link_key(&entry.path()) {
                if !data.contains_key(&key) {
                    return Ok(false);
                }
            }
        }
        Ok(data
            .keys()
            .all(|k| link_key(&dir.join(k)).as_deref() == Some(k.as_str())))
    }

    /// The fallback without a Vault token: the names of the manifest whose
    /// directory has a `..data` link, with their Vault paths.
    pub fn present(&self) -> Result<Vec<(String, String)>> {
        self.check_dir()?;
        Ok(self
            .read_manifest()?
            .secrets
            .into_iter()
            .filter(|(name, _)| fs::symlink_metadata(self.dir().join(name).join(DATA)).is_ok())
            .collect())
    }
}

/// The key a `<key> -> ..data/<key>` link stands for; `None` for anything else.
fn link_key(path: &Path) -> Option<String> {
    let target = fs::read_link(path).ok()?;
    let key = target.strip_prefix(DATA).ok()?.to_str()?.to_string();
    let name = path.file_name()?.to_str()?;
    (key == name).then_some(key)
}

/// `..YYYY_MM_DD_HH_MM_SS.<digits>`, the kubelet's name for data directories.
fn is_timestamp_dir(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("..") else {
        return false;
    };
    let b = rest.as_bytes();
    b.len() > 20
        && b[..19].iter().enumerate().all(|(i, c)| match i {
            4 | 7 | 10 | 13 | 16 => *c == b'_',
            _ => c.is_ascii_digit(),
        })
        && b[19] == b'.'
        && b[20..].iter().all(u8::is_ascii_digit)
}

/// Creates `..<UTC time>.<random digits>` in `dir`, mode 0755 (see [`set_dir_mode`]).
fn new_timestamp_dir(dir: &Path) -> Result<PathBuf> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, mo, d, h, mi, s) = log::civil(secs);
    for _ in 0..10 {
        let name = format!(
            "..{y:04}_{mo:02}_{d:02}_{h:02}_{mi:02}_{s:02}.{:09}",
            (crate::random::random_unit() * 1e9) as u64
        );
        let path = dir.join(&name);
        match fs::create_dir(&path) {
            Ok(()) => {
                set_dir_mode(&path)?;
                return Ok(PathBuf::from(name));
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(format!("create {}", path.display()), e)),
        }
    }
    Err(Error::Other(format!(
        "could not create a new data directory in {}",
        dir.display()
    )))
}

/// Mode 0755 whatever the umask (readers must traverse it; the files carry
/// the access rule), keeping the set-group-ID bit a directory inherits from
/// an `fsGroup` volume: with it, the files get the volume's group too.
fn set_dir_mode(dir: &Path) -> Result<()> {
    let ctx = |e| Error::io(format!("set mode of {}", dir.display()), e);
    let setgid = fs::metadata(dir).map_err(ctx)?.mode() & 0o2000;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755 | setgid)).map_err(ctx)
}

/// Removes what this layout creates in `dir`, then `dir` itself if it is
/// empty; anything else found there is kept, with a warning.
fn remove_secret_dir(dir: &Path) -> Result<()> {
    let io = |what: &str, path: &Path, e| Error::io(format!("{what} {}", path.display()), e);
    // Never through a symlink: it may lead to another volume's layout.
    match fs::symlink_metadata(dir) {
        Ok(m) if !m.is_dir() => {
            log::warn(format!(
                "kept {}: not a directory the synchronizer created",
                dir.display()
            ));
            return Ok(());
        }
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("inspect", dir, e)),
    }
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("read", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io("read", dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
        if (is_link && (name == DATA || name == DATA_TMP)) || link_key(&path).is_some() {
            fs::remove_file(&path).map_err(|e| io("remove", &path, e))?;
        } else if is_timestamp_dir(&name) && entry.file_type().is_ok_and(|t| t.is_dir()) {
            fs::remove_dir_all(&path).map_err(|e| io("remove", &path, e))?;
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => sync_dir(dir.parent().unwrap_or(Path::new("/"))),
        Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty => {
            log::warn(format!(
                "kept directory {}: it holds files the synchronizer did not create",
                dir.display()
            ));
            Ok(())
        }
        Err(e) => Err(io("remove", dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_names_are_the_kubelets() {
        assert!(is_timestamp_dir("..2026_11_29_15_04_05.123456789"));
        assert!(is_timestamp_dir("..2016_02_01_15_04_05.1"));
        assert!(!is_timestamp_dir("..data"));
        assert!(!is_timestamp_dir("..data_tmp"));
        assert!(!is_timestamp_dir("2026_11_29_15_04_05.1"));
        assert!(!is_timestamp_dir("..2026_11_29_15_04_05."));
        assert!(!is_timestamp_dir("..2026-11-29_15_04_05.1"));
    }
}
