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
//!
//! Another container sharing the volume may be hostile: every operation is
//! relative to a directory opened once ([`crate::dir`]: `openat` and its
//! kin, no link followed), so a directory swapped for a link between a
//! check and its use is never written or deleted through; the record is
//! read without following a link or blocking on a FIFO, and a missing or
//! damaged record stops the run (see [`FileTarget::apply`]).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::plan::MAX_SECRET_DATA;
use super::plan::{Desired, Digest, Plan, Reread, Summary};
use crate::config::FilesSettings;
use crate::dir::{is, Dir, Kind};
use crate::error::{Error, Result};
use crate::log;
use crate::mapping::is_dns_subdomain;
use crate::parallel::{parallel, parallel_n, LARGE_WORKERS};

/// The record of the directories we created, in the target directory.
/// Secret names are DNS subdomains, so they never begin with a dot.
pub const MANIFEST: &str = ".vault-kubernetes.json";
const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Contents of [`MANIFEST`]: the synchronizer that owns the directory
/// (`SYNCHRONIZER_ID`; none when it has none) and Secret name to the Vault
/// path it comes from.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Manifest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    secrets: BTreeMap<String, String>,
}

pub struct FileTarget {
    settings: FilesSettings,
    /// An exclusive `flock` on the target directory, taken at the first
    /// write and held until the process exits (see [`FileTarget::lock`]);
    /// `Some(None)` where the file system has no locks.
    lock: OnceLock<Option<Flock<fs::File>>>,
    /// The target directory, opened by each run's [`FileTarget::check_dir`]:
    /// every operation is relative to it, and to the directories opened
    /// from it, never through a link (see [`crate::dir`]).
    root: Mutex<Option<Arc<Dir>>>,
    /// The target directory the first run opened (device, inode): every
    /// later run must open the same one (see [`FileTarget::check_dir`]).
    first: OnceLock<(u64, u64)>,
}

/// Largest record accepted: about 10 000 entries of 400 bytes.
const MANIFEST_LIMIT: u64 = 4 * 1024 * 1024;

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
            root: Mutex::new(None),
            first: OnceLock::new(),
        }
    }

    /// A target whose directory exists now: checked at start, before any
    /// request to Vault, so a missing volume stops the program at once with
    /// a line naming `SYNCHRONIZER_TARGET_DIR`, as a bad value does.
    pub fn open(settings: &FilesSettings) -> Result<Self> {
        let target = FileTarget::new(settings);
        target.check_dir()?;
        Ok(target)
    }

    /// One synchronizer per target directory: a second one with another
    /// mapping would prune the first one's directories (and it the
    /// second's), and their record writes would overwrite each other. The
    /// lock is released when the process exits, so an init container
    /// followed by a sidecar works; two at the same time do not.
    fn lock(&self, root: &Dir) -> Result<()> {
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
        // The very directory this run opened, not the path again: a link
        // swapped in between would lock one directory and write another.
        let dir = match root.file() {
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

    /// Opens the target directory for this run: the one the first run
    /// opened. The path is resolved (links followed: it is a configured
    /// mount point) at every run, so a directory replaced since, or a link
    /// swapped in for it by a container that can write its parent, would
    /// lead this run into another directory (another synchronizer's, whose
    /// lock this process never took, and whose directories prune would
    /// remove): that stops the run, nothing written or deleted.
    fn check_dir(&self) -> Result<Arc<Dir>> {
        match Dir::open(self.dir()) {
            Ok(root) => {
                let id = root.identity()?;
                if *self.first.get_or_init(|| id) != id {
                    return Err(Error::Other(format!(
                        "target directory {} is no longer the directory this synchronizer started with \
                         (replaced, or a link to another one put in its place): nothing written or deleted",
                        self.dir().display()
                    )));
                }
                let root = Arc::new(root);
                *self.root.lock().unwrap_or_else(|e| e.into_inner()) = Some(root.clone());
                Ok(root)
            }
            Err(e) if is(&e, Errno::ENOENT) || is(&e, Errno::ENOTDIR) => Err(Error::Other(format!(
                "target directory {} does not exist (SYNCHRONIZER_TARGET_DIR); mount a volume there",
                self.dir().display()
            ))),
            Err(e) => Err(e),
        }
    }

    /// The target directory [`FileTarget::check_dir`] opened.
    fn root(&self) -> Arc<Dir> {
        let root = self.root.lock().unwrap_or_else(|e| e.into_inner());
        root.clone().expect("check_dir runs first")
    }

    /// The record, read without following a link or blocking on a FIFO.
    /// A damaged record stops the run, and so does a missing one while a
    /// directory laid out by a synchronizer is there: without the record
    /// we cannot tell ours from others', and taking every directory for
    /// "not managed" would silently stop every rotation.
    fn read_manifest(&self) -> Result<Manifest> {
        let root = self.root();
        let path = root.join(MANIFEST);
        let decode = |reason: String| Error::Decode {
            context: format!("read {}", path.display()),
            reason,
        };
        let bytes = match root.read_file(MANIFEST, MANIFEST_LIMIT) {
            Ok(bytes) => bytes,
            Err(e) if is(&e, Errno::ENOENT) => {
                return match self.laid_out(&root)? {
                    None => Ok(Manifest::default()),
                    Some(name) => Err(Error::Other(format!(
                        "the record {} is missing, but {} is laid out by a synchronizer: \
                         without the record nothing can be told ours; restore it or remove \
                         the directories (nothing written or deleted)",
                        path.display(),
                        root.join(name).display()
                    ))),
                };
            }
            Err(e) if is(&e, Errno::ELOOP) => {
                return Err(decode("a symbolic link, not the record we write".into()))
            }
            Err(e) => return Err(e),
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

    /// A directory of the target laid out as this module lays them out (a
    /// `..data` link to a timestamped directory), if there is one.
    fn laid_out(&self, root: &Dir) -> Result<Option<String>> {
        for name in root.names()? {
            if self.is_laid_out(root, &name)? {
                return Ok(Some(name));
            }
        }
        Ok(None)
    }

    /// Whether `root`'s entry `name` is a directory laid out as this module
    /// lays them out (a `..data` link to a timestamped directory).
    fn is_laid_out(&self, root: &Dir, name: &str) -> Result<bool> {
        let Ok(dir) = root.open_dir(name) else {
            return Ok(false);
        };
        let data = dir.read_link(DATA)?;
        Ok(data.is_some_and(|t| t.to_str().is_some_and(is_timestamp_dir)))
    }

    /// Atomically (temporary file, fsync, rename, fsync of the directory).
    fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        let root = self.root();
        let tmp = format!("{MANIFEST}.tmp");
        let body = serde_json::to_vec_pretty(manifest).expect("a map of strings serializes");
        let _ = root.unlink(&tmp);
        root.create_file(&tmp, 0o644, None, None, &body)?;
        root.rename(&tmp, MANIFEST)?;
        root.sync()
    }

    /// Writes the plan: every secret, then (if all succeeded) prunes the
    /// directories of the manifest no longer in the plan.
    ///
    /// Ownership, as for Secrets: the record names the synchronizer that
    /// owns the directory (`id`, its `SYNCHRONIZER_ID`). Another one's
    /// directory is left alone: a `WARNING:` naming both, and an error. A
    /// record without owner (earlier versions) is adopted by the first
    /// synchronizer with an identity. Without `SYNCHRONIZER_ID` the owner
    /// is the pod: the volume is the pod's, and the lock keeps two of its
    /// synchronizers from running on it at once.
    pub fn apply(
        &self,
        plan: &Plan,
        prune: bool,
        id: Option<&str>,
        reread: &Reread<'_>,
    ) -> Result<Summary> {
        let root = self.check_dir()?;
        self.lock(&root)?;
        let mut manifest = self.read_manifest()?;
        let mut recorded = false;
        match (&manifest.owner, id) {
            (Some(owner), _) if Some(owner.as_str()) == id => {}
            (Some(owner), me) => {
                let me = me.unwrap_or("no SYNCHRONIZER_ID");
                log::warn(format!(
                    "target directory {} belongs to synchronizer {owner} (its record); this synchronizer ({me}) leaves it as it is",
                    self.dir().display()
                ));
                return Err(Error::Other(format!(
                    "target directory {} is owned by synchronizer {owner}, not {me}: nothing written or deleted",
                    self.dir().display()
                )));
            }
            (None, Some(me)) => {
                if !manifest.secrets.is_empty() {
                    log::info(format!(
                        "adopt target directory {} as {me}",
                        self.dir().display()
                    ));
                }
                manifest.owner = Some(me.to_string());
                recorded = true;
            }
            (None, None) => {}
        }
        let mut summary = Summary {
            not_found: plan.not_found.len(),
            ..Summary::default()
        };
        // Record new names before creating anything, so a crash in between
        // can leave only recorded directories behind.
        let mut ours = Vec::new();
        let root = self.root();
        for want in &plan.secrets {
            if !manifest.secrets.contains_key(&want.name) {
                if root.stat(&want.name)?.is_some() {
                    // Laid out as we lay them out, yet not in the record:
                    // the record was emptied or edited since, and taking
                    // the directory for "not managed" would silently stop
                    // its rotation (as a missing record would).
                    if self.is_laid_out(&root, &want.name)? {
                        return Err(Error::Other(format!(
                            "{} is laid out by a synchronizer but the record {} does not list it: \
                             the record was changed outside the synchronizer; restore it or remove \
                             the directory (nothing written or deleted)",
                            root.join(&want.name).display(),
                            root.join(MANIFEST).display()
                        )));
                    }
                    log::warn(format!(
                        "ignoring directory {} - not managed by synchronizer",
                        root.join(&want.name).display()
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

        // In parallel: each secret is fsynced on its own, which dominates
        // on disk. Large secrets (over 256 KiB, or not kept by the plan and
        // read again) are written by fewer workers, so memory stays bounded
        // whatever their size.
        let (small, large): (Vec<&Desired>, Vec<&Desired>) =
            ours.into_iter().partition(|d| !plan.is_large(d));
        let write = |want: &&Desired| self.write_secret(want, plan, reread);
        let results =
            parallel(&small, write)
                .into_iter()
                .chain(parallel_n(&large, LARGE_WORKERS, write));
        let mut errors = Vec::new();
        for (want, result) in small.iter().chain(&large).zip(results) {
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
                remove_secret_dir(&root, &name)?;
                manifest.secrets.remove(&name);
                self.write_manifest(&manifest)?;
                log::info(format!("delete directory {}", root.join(&name).display()));
                summary.deleted += 1;
                summary.pruned.push(name);
            }
        }
        Ok(summary)
    }

    fn write_secret(&self, want: &Desired, plan: &Plan, reread: &Reread<'_>) -> Result<Outcome> {
        let root = self.root();
        let name = want.name.as_str();
        let created = match root.stat(name)? {
            Some(e) if e.kind == Kind::Dir => false,
            Some(_) => {
                return Err(Error::Other(format!(
                    "{} exists and is not a directory",
                    root.join(name).display()
                )))
            }
            None => {
                root.mkdir(name)?;
                true
            }
        };
        // From here on, relative to this descriptor: a link swapped in for
        // the directory is never followed.
        let dir = root.open_dir(name)?;
        if created {
            set_dir_mode(&dir)?;
        }
        let old = dir.read_link(DATA)?;
        if let Some(old) = &old {
            if self.is_current(&dir, old, &want.checksum)? {
                return Ok(Outcome::Unchanged);
            }
        }
        let (data, _) = reread.data(plan, want)?;
        let data = &*data;

        let ts = new_timestamp_dir(&dir)?;
        let result = self.populate(&dir, &ts, data);
        if let Err(e) = result {
            let _ = dir.remove_tree(&ts);
            return Err(e);
        }
        // The atomic step: `..data` now names the new directory.
        let _ = dir.unlink(DATA_TMP);
        dir.symlink(Path::new(&ts), DATA_TMP)?;
        dir.rename(DATA_TMP, DATA)?;
        Self::link_keys(&dir, data)?;
        dir.sync()?;

        // Clean-up of what the old version had: stale key links, old data.
        for entry in dir.names()? {
            if let Some(key) = link_key(&dir, &entry) {
                if !data.contains_key(&key) {
                    dir.unlink(&entry)?;
                }
            } else if is_timestamp_dir(&entry)
                && entry != ts
                && dir.stat(&entry)?.is_some_and(|e| e.kind == Kind::Dir)
            {
                dir.remove_tree(&entry)?;
            }
        }
        let verb = if created || old.is_none() {
            "create"
        } else {
            "update"
        };
        log::info(format!(
            "{verb} directory {} from vault secret {}",
            dir.path().display(),
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
    fn populate(&self, dir: &Dir, ts: &str, data: &BTreeMap<String, Vec<u8>>) -> Result<()> {
        let s = &self.settings;
        let ts_dir = dir.open_dir(ts)?;
        for (key, value) in data {
            ts_dir.create_file(key, s.mode, s.uid, s.gid, value)?;
        }
        ts_dir.sync()?;
        for key in data.keys() {
            match dir.stat(key)? {
                None => {}
                Some(_) if link_key(dir, key).as_deref() == Some(key) => {}
                Some(_) => {
                    return Err(Error::Other(format!(
                        "{} exists and is not the synchronizer's link to {DATA}/{key}",
                        dir.join(key).display()
                    )))
                }
            }
        }
        Ok(())
    }

    /// Adds the missing `<key> -> ..data/<key>` links, after the swap as
    /// the kubelet does: a key that is visible is always readable.
    fn link_keys(dir: &Dir, data: &BTreeMap<String, Vec<u8>>) -> Result<()> {
        for key in data.keys() {
            if link_key(dir, key).as_deref() != Some(key) {
                dir.symlink(&Path::new(DATA).join(key), key)?;
            }
        }
        Ok(())
    }

    /// Whether the directory already holds exactly the data of this
    /// checksum: the same keys and bytes (compared by digest, a file at a
    /// time), our mode and owner, every key link present, none stale.
    /// `ts` is where `..data` points: only one of our timestamped names
    /// (a link elsewhere is not current, and is replaced).
    fn is_current(&self, dir: &Dir, ts: &Path, checksum: &str) -> Result<bool> {
        let s = &self.settings;
        let Some(ts) = ts.to_str().filter(|t| is_timestamp_dir(t)) else {
            return Ok(false);
        };
        let data_dir = match dir.open_dir(ts) {
            Ok(d) => d,
            Err(e) if is(&e, Errno::ENOENT) || is(&e, Errno::ENOTDIR) => return Ok(false),
            Err(e) => return Err(e),
        };
        let mut keys = data_dir.names()?;
        keys.sort();
        let mut digest = Digest::new();
        for name in &keys {
            let Some(meta) = data_dir.stat(name)? else {
                return Ok(false);
            };
            if meta.kind != Kind::File
                || meta.mode != s.mode
                || s.uid.is_some_and(|u| u != meta.uid)
                || s.gid.is_some_and(|g| g != meta.gid)
                || meta.size > MAX_SECRET_DATA as u64
            {
                return Ok(false);
            }
            match data_dir.read_file(name, meta.size) {
                Ok(bytes) => digest.update(name, &bytes),
                Err(Error::Other(_)) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        if digest.finish() != checksum {
            return Ok(false);
        }
        for entry in dir.names()? {
            if let Some(key) = link_key(dir, &entry) {
                if keys.binary_search(&key).is_err() {
                    return Ok(false);
                }
            }
        }
        Ok(keys
            .iter()
            .all(|k| link_key(dir, k).as_deref() == Some(k.as_str())))
    }

    /// The fallback without a Vault token: the names of the manifest whose
    /// directory has a `..data` link, with their Vault paths.
    pub fn present(&self) -> Result<Vec<(String, String)>> {
        let root = self.check_dir()?;
        Ok(self
            .read_manifest()?
            .secrets
            .into_iter()
            .filter(|(name, _)| {
                root.open_dir(name)
                    .is_ok_and(|d| d.stat(DATA).is_ok_and(|e| e.is_some()))
            })
            .collect())
    }
}

/// The key a `<key> -> ..data/<key>` link in `dir` stands for; `None` for
/// anything else.
fn link_key(dir: &Dir, name: &str) -> Option<String> {
    let target = dir.read_link(name).ok()??;
    let key = target.strip_prefix(DATA).ok()?.to_str()?.to_string();
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

/// Creates `..<UTC time>.<random digits>` in `dir`, mode 0755 (see
/// [`set_dir_mode`]); its name.
fn new_timestamp_dir(dir: &Dir) -> Result<String> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, mo, d, h, mi, s) = log::civil(secs);
    for _ in 0..10 {
        let name = format!(
            "..{y:04}_{mo:02}_{d:02}_{h:02}_{mi:02}_{s:02}.{:09}",
            (crate::random::random_unit() * 1e9) as u64
        );
        match dir.mkdir(&name) {
            Ok(()) => {
                set_dir_mode(&dir.open_dir(&name)?)?;
                return Ok(name);
            }
            Err(e) if is(&e, Errno::EEXIST) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Other(format!(
        "could not create a new data directory in {}",
        dir.path().display()
    )))
}

/// Mode 0755 whatever the umask (readers must traverse it; the files carry
/// the access rule), keeping the set-group-ID bit a directory inherits from
/// an `fsGroup` volume: with it, the files get the volume's group too.
fn set_dir_mode(dir: &Dir) -> Result<()> {
    let setgid = dir.stat_self()?.mode & 0o2000;
    dir.chmod_self(0o755 | setgid)
}

/// Removes what this layout creates in `root`'s directory `name`, then the
/// directory itself if it is empty; anything else found there is kept,
/// with a warning. Never through a link: it may lead to another volume.
fn remove_secret_dir(root: &Dir, name: &str) -> Result<()> {
    let kept = || {
        log::warn(format!(
            "kept {}: not a directory the synchronizer created",
            root.join(name).display()
        ));
        Ok(())
    };
    match root.stat(name)? {
        None => return Ok(()),
        Some(e) if e.kind != Kind::Dir => return kept(),
        Some(_) => {}
    }
    let dir = match root.open_dir(name) {
        Ok(dir) => dir,
        Err(e) if is(&e, Errno::ENOENT) => return Ok(()),
        Err(e) if is(&e, Errno::ENOTDIR) => return kept(),
        Err(e) => return Err(e),
    };
    for entry in dir.names()? {
        let kind = dir.stat(&entry)?.map(|e| e.kind);
        if (kind == Some(Kind::Link) && (entry == DATA || entry == DATA_TMP))
            || link_key(&dir, &entry).is_some()
        {
            dir.unlink(&entry)?;
        } else if is_timestamp_dir(&entry) && kind == Some(Kind::Dir) {
            dir.remove_tree(&entry)?;
        }
    }
    match root.rmdir(name) {
        Ok(()) => root.sync(),
        Err(e) if is(&e, Errno::ENOTEMPTY) => {
            log::warn(format!(
                "kept directory {}: it holds files the synchronizer did not create",
                root.join(name).display()
            ));
            Ok(())
        }
        Err(e) => Err(e),
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
