//! Where serialized lines go: stdout, or a file opened for appending whose
//! rename by log rotation is noticed (see the module above on rotation).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
#[cfg(test)]
use std::sync::{Arc, Mutex};

/// Where serialized lines go.
pub(super) enum Sink {
    Stdout(io::Stdout),
    File {
        path: PathBuf,
        file: File,
        /// (device, inode) of `file`, to notice the path being renamed away.
        id: Option<(u64, u64)>,
    },
    #[cfg(test)]
    Test(Arc<Mutex<super::tests::TestSink>>),
}

impl Sink {
    pub(super) fn open_file(path: PathBuf) -> io::Result<Sink> {
        let file = open_append(&path)?;
        let id = file_id(&file);
        Ok(Sink::File { path, file, id })
    }

    /// One `write` call: may write less than `buf` (disk full mid-batch).
    pub(super) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            // `Stdout` is line-buffered, but a batch ending in '\n' is passed
            // straight through in one call.
            Sink::Stdout(out) => {
                let mut out = out.lock();
                let n = out.write(buf)?;
                // Whatever `write` accepted belongs to `Stdout` now (a failed
                // flush keeps it buffered there and retries it), so report `n`
                // regardless, or the retry would write those bytes twice.
                let _ = out.flush();
                Ok(n)
            }
            Sink::File { file, .. } => file.write(buf),
            #[cfg(test)]
            Sink::Test(t) => crate::sync::lock(t).write(buf),
        }
    }

    pub(super) fn describe(&self) -> String {
        match self {
            Sink::Stdout(_) => "stdout".to_string(),
            Sink::File { path, .. } => path.display().to_string(),
            #[cfg(test)]
            Sink::Test(_) => "test".to_string(),
        }
    }
}

pub(super) fn open_append(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.append(true).create(true);
    #[cfg(unix)]
    {
        // Audit lines name people (sub, email): not world-readable.
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o640);
    }
    opts.open(path)
}

#[cfg(unix)]
pub(super) fn file_id(file: &File) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    file.metadata().ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
pub(super) fn file_id(_file: &File) -> Option<(u64, u64)> {
    None
}

/// True when `path` no longer names the file we have open (renamed or
/// deleted). Errors other than "not found" (e.g. a permission hiccup) count
/// as "not rotated" so a flaky `stat` cannot make us reopen in a loop.
#[cfg(unix)]
pub(super) fn path_rotated(path: &Path, open: Option<(u64, u64)>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(open) = open else {
        return false;
    };
    match std::fs::metadata(path) {
        Ok(m) => (m.dev(), m.ino()) != open,
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

#[cfg(not(unix))]
pub(super) fn path_rotated(_path: &Path, _open: Option<(u64, u64)>) -> bool {
    false
}
