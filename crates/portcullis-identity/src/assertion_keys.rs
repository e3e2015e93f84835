//! `assertion.signing_keys_dir`: assertion keys kept on disk, shared by every replica
//! that mounts the directory, and rotated on a fixed cadence.
//!
//! Each managed key is one PKCS#8 PEM file (mode 0600) named after the start of the
//! rotation period it signs in: `assertion-es256-000001764547200.pem` signs from
//! Unix time 1764547200 on. Because the name is derived from the period, replicas
//! that rotate at the same moment all try to create the *same* file, and the
//! create is atomic and exclusive (write a temporary file, then `link(2)` it to
//! the final name, which fails if the name exists): exactly one key wins and the
//! others load it. The key for the next period is created one period ahead, so
//! verifiers that cache the JWKS already know it when it starts signing, and a
//! replica switching to it needs no I/O on the request path.
//!
//! Other `*.pem` files in the directory (a key from before, or one put there by
//! hand) are published but never sign.

use crate::assertion::AssertionError;
use crate::jose::Alg;
use crate::keys::SigningKey;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const PREFIX: &str = "assertion-";
/// A managed file younger than this that does not parse is taken to be half
/// written by a replica on a filesystem without `link(2)`, and skipped for now.
const YOUNG: Duration = Duration::from_secs(10);
/// Temporary files older than this were left by a crashed replica.
const STALE_TEMP: Duration = Duration::from_secs(600);

/// One key of the directory.
pub(crate) struct DirKey {
    pub(crate) key: SigningKey,
    /// For a managed key, the Unix time from which it signs. `None` for any other
    /// `*.pem` (published, never signing).
    pub(crate) start: Option<u64>,
}

/// The directory and the schedule its keys follow.
#[derive(Debug, Clone)]
pub(crate) struct KeyDir {
    dir: PathBuf,
    alg: Alg,
    rotate_every: u64,
    /// How long after a key stops signing its file is kept: its last assertions'
    /// lifetime and skew, plus a whole period so a lagging replica still finds it.
    keep_after_retired: u64,
}

impl KeyDir {
    pub(crate) fn new(dir: &str, alg: Alg, rotate_every: u64, publish_after_retired: u64) -> Self {
        KeyDir {
            dir: PathBuf::from(dir),
            alg,
            rotate_every: rotate_every.max(1),
            keep_after_retired: publish_after_retired + rotate_every.max(1),
        }
    }

    pub(crate) fn alg(&self) -> Alg {
        self.alg
    }

    pub(crate) fn rotate_every(&self) -> u64 {
        self.rotate_every
    }

    /// The directory, for messages.
    pub(crate) fn shown(&self) -> String {
        self.dir.display().to_string()
    }

    /// Start of the rotation period that contains `now`.
    pub(crate) fn period_start(&self, now: u64) -> u64 {
        now - now % self.rotate_every
    }

    /// Makes sure the keys of `now`'s period and of the next one exist (creating
    /// what is missing; of racing replicas exactly one creates each), removes files
    /// nobody needs any more, and returns every key in the directory.
    pub(crate) fn sync(&self, now: u64) -> Result<Vec<DirKey>, AssertionError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| self.error(&self.dir, e))?;
        let start = self.period_start(now);
        for s in [start, start + self.rotate_every] {
            self.create_if_missing(s)?;
        }
        let keys = self.load()?;
        self.prune(&keys, now);
        Ok(keys)
    }

    /// Whether [`sync`](Self::sync) could create the directory, without creating
    /// it (for `check`): its nearest existing ancestor must be a directory that
    /// is not read-only. `serve` refuses to start otherwise, and `check` must
    /// refuse what `serve` refuses.
    pub(crate) fn could_create(&self) -> Result<(), AssertionError> {
        let Some(existing) = self.dir.ancestors().find(|a| a.exists()) else {
            return Ok(());
        };
        let refused = |why: &str| {
            self.error(
                existing,
                std::io::Error::new(std::io::ErrorKind::PermissionDenied, why.to_string()),
            )
        };
        match std::fs::metadata(existing) {
            Ok(m) if !m.is_dir() => Err(refused(
                "not a directory: the key directory cannot be made in it",
            )),
            Ok(m) if m.permissions().readonly() => {
                Err(refused("read-only: the key directory cannot be made in it"))
            }
            Ok(_) => Ok(()),
            Err(e) => Err(self.error(existing, e)),
        }
    }

    /// Every key in the directory, without writing anything; a missing directory
    /// holds no keys.
    pub(crate) fn load(&self) -> Result<Vec<DirKey>, AssertionError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.error(&self.dir, e)),
        };
        let mut keys = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.error(&self.dir, e))?;
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !name.ends_with(".pem") || name.starts_with('.') || !path.is_file() {
                continue;
            }
            let start = parse_name(name).map(|(_, start)| start);
            match read_key(&path) {
                Ok(key) => keys.push(DirKey { key, start }),
                Err(_) if start.is_some() && is_young(&path) => continue,
                Err(e) => return Err(e),
            }
        }
        keys.sort_by_key(|k| k.start);
        Ok(keys)
    }

    fn file_name(&self, start: u64) -> String {
        format!("{PREFIX}{}-{start:015}.pem", alg_slug(self.alg))
    }

    /// Creates the key file for the period starting at `start` unless it exists.
    fn create_if_missing(&self, start: u64) -> Result<(), AssertionError> {
        let target = self.dir.join(self.file_name(start));
        if target.exists() {
            return Ok(());
        }
        let pem = SigningKey::generate(self.alg)
            .and_then(|k| k.to_pkcs8_pem())
            .map_err(AssertionError::Generate)?;
        let mut suffix = [0u8; 8];
        aws_lc_rs::rand::fill(&mut suffix).map_err(|_| AssertionError::Sign)?;
        let temp = self.dir.join(format!(
            ".{PREFIX}{}.tmp",
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ));
        write_new(&temp, pem.as_bytes()).map_err(|e| self.error(&temp, e))?;
        // link(2) publishes the complete file under its final name, or fails because
        // another replica's file already has it.
        let linked = std::fs::hard_link(&temp, &target);
        let _ = std::fs::remove_file(&temp);
        match linked {
            Ok(()) => {
                sync_dir(&self.dir);
                tracing::info!(file = %target.display(), "assertion signing key created");
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            // A filesystem without hard links: an exclusive create still lets only
            // one replica win; readers skip the file while it is young and unreadable.
            Err(_) => match write_new(&target, pem.as_bytes()) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(self.error(&target, e)),
            },
        }
    }

    /// Removes managed files whose key no verifier can need any more, and temporary
    /// files a crashed replica left. Failures are harmless (another replica may
    /// have removed the file first) and ignored.
    fn prune(&self, keys: &[DirKey], now: u64) {
        let mut starts: Vec<u64> = keys
            .iter()
            .filter(|k| k.key.alg() == self.alg)
            .filter_map(|k| k.start)
            .collect();
        starts.sort_unstable();
        // A key stops signing when its successor's period starts.
        for pair in starts.windows(2) {
            if pair[1] <= now && now >= pair[1] + self.keep_after_retired {
                let _ = std::fs::remove_file(self.dir.join(self.file_name(pair[0])));
            }
        }
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > STALE_TEMP);
            if name.starts_with(&format!(".{PREFIX}")) && name.ends_with(".tmp") && old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    fn error(&self, path: &Path, e: std::io::Error) -> AssertionError {
        AssertionError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }
}

/// `assertion-es256-000001764547200.pem` → (`es256`, 1764547200).
fn parse_name(name: &str) -> Option<(&str, u64)> {
    let stem = name.strip_prefix(PREFIX)?.strip_suffix(".pem")?;
    let (alg, start) = stem.split_once('-')?;
    if start.is_empty() || !start.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((alg, start.parse().ok()?))
}

fn alg_slug(alg: Alg) -> String {
    alg.as_str().to_ascii_lowercase()
}

fn read_key(path: &Path) -> Result<SigningKey, AssertionError> {
    let shown = path.display().to_string();
    let pem = std::fs::read_to_string(path).map_err(|e| AssertionError::File {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    SigningKey::from_pem(&pem).map_err(|source| AssertionError::Key {
        path: shown,
        source,
    })
}

fn is_young(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_none_or(|age| age < YOUNG)
}

/// Creates `path` (failing if it exists) readable by its owner only, and writes
/// `bytes` durably.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes a new directory entry durable; best effort.
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn names_sort_by_time_and_parse_back() {
        let d = KeyDir::new("/x", Alg::ES256, 3600, 120);
        let a = d.file_name(7_200);
        let b = d.file_name(1_764_547_200);
        assert!(a < b, "{a} < {b}");
        assert_eq!(parse_name(&b), Some(("es256", 1_764_547_200)));
        assert_eq!(parse_name("assertion-es256-.pem"), None);
        assert_eq!(parse_name("assertion-es256-12x.pem"), None);
        assert_eq!(parse_name("private.pem"), None);
    }

    #[test]
    fn sync_creates_this_and_the_next_period_owner_only_and_prunes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let d = KeyDir::new(dir.to_str().unwrap(), Alg::ES256, 100, 20);
        let keys = d.sync(1_050).unwrap();
        let starts: Vec<_> = keys.iter().map(|k| k.start).collect();
        assert_eq!(starts, vec![Some(1_000), Some(1_100)]);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let mode = entry.unwrap().metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        // Same period again: nothing new.
        assert_eq!(d.sync(1_099).unwrap().len(), 2);
        // 1_000 stopped signing at 1_100; kept for 20 + a period, then removed.
        assert_eq!(d.sync(1_219).unwrap().len(), 4);
        let after: Vec<_> = d.sync(1_220).unwrap().iter().map(|k| k.start).collect();
        assert!(!dir.join(d.file_name(1_000)).exists(), "{after:?}");
        assert!(dir.join(d.file_name(1_100)).exists());
    }

    #[test]
    fn garbage_is_refused_unless_it_is_a_young_managed_file() {
        let tmp = tempfile::tempdir().unwrap();
        let d = KeyDir::new(tmp.path().to_str().unwrap(), Alg::ES256, 100, 20);
        std::fs::write(tmp.path().join(d.file_name(0)), "half written").unwrap();
        assert!(d.load().unwrap().is_empty(), "young partial file skipped");
        std::fs::write(tmp.path().join("hand.pem"), "not a key").unwrap();
        assert!(matches!(d.load(), Err(AssertionError::Key { .. })));
    }
}
