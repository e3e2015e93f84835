//! Streaming reader of audit files (SPEC §7): one line in memory at a time,
//! plain or gzip (told apart by the magic bytes, not the file name, since rotated
//! files are named every which way), `-` for stdin.
//!
//! Only the fields the policy commands need are parsed, borrowed from the line
//! buffer where they hold no escapes; a line that does not parse is counted and
//! skipped, never echoed (an audit file is a log, and logs end up in tickets).

use anyhow::Context as _;
use serde::Deserialize;
use std::borrow::Cow;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// A line longer than this is skipped as malformed: no audit line comes close
/// (paths and identities are bounded well below it), and reading it whole would
/// break the one-line-in-memory promise for a file that is not an audit log.
const MAX_LINE_BYTES: usize = 1024 * 1024;

/// `decision` of an audit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
}

/// `identity.type` of an audit line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    User,
    Service,
    Workload,
    #[default]
    Anonymous,
}

/// The fields of an audit line the policy commands read.
#[derive(Debug, Deserialize)]
pub struct AuditLine<'a> {
    #[serde(borrow)]
    pub method: Cow<'a, str>,
    #[serde(borrow)]
    pub path: Cow<'a, str>,
    #[serde(borrow, default)]
    pub route: Option<Cow<'a, str>>,
    pub decision: Decision,
    #[serde(borrow)]
    pub reason: Cow<'a, str>,
    #[serde(borrow, default)]
    pub rule: Option<Cow<'a, str>>,
    /// Absent in lines from before audit mode existed: those were all enforced.
    #[serde(default = "enforced_by_default")]
    pub enforced: bool,
    #[serde(borrow, default)]
    pub identity: Option<AuditIdentity<'a>>,
}

fn enforced_by_default() -> bool {
    true
}

/// `identity` of an audit line (only the attributes rules can name).
#[derive(Debug, Default, Deserialize)]
pub struct AuditIdentity<'a> {
    #[serde(rename = "type", default)]
    pub kind: Kind,
    #[serde(borrow, default)]
    pub sub: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub issuer: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub client_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub groups: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    pub workload: Option<Cow<'a, str>>,
}

impl AuditLine<'_> {
    /// True when the policy let the request through: allowed, or denied only in
    /// `mode: audit` (a shadow deny).
    pub fn was_permitted(&self) -> bool {
        self.decision == Decision::Allow || !self.enforced
    }
}

/// What reading a file came to.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadStats {
    /// Audit lines parsed and handed on.
    pub lines: u64,
    /// Lines skipped because they were not audit lines.
    pub malformed: u64,
}

impl ReadStats {
    /// The stderr note about skipped lines, when there were any.
    pub fn malformed_note(&self) -> Option<String> {
        (self.malformed > 0).then(|| {
            format!(
                "warning: skipped {} malformed line{} (not an audit line)",
                self.malformed,
                if self.malformed == 1 { "" } else { "s" }
            )
        })
    }
}

/// Opens `path` (`-`: stdin), inflating it when it starts with the gzip magic.
pub fn open(path: &Path) -> anyhow::Result<Box<dyn BufRead>> {
    let raw: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot read audit file {}", path.display()))?;
        Box::new(file)
    };
    let mut reader = BufReader::with_capacity(256 * 1024, raw);
    let head = reader
        .fill_buf()
        .with_context(|| format!("cannot read audit file {}", path.display()))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        // Multi-member: `cat a.gz b.gz` and some rotators append members.
        let inflated = flate2::bufread::MultiGzDecoder::new(reader);
        Ok(Box::new(BufReader::with_capacity(256 * 1024, inflated)))
    } else {
        Ok(Box::new(reader))
    }
}

/// Reads every line of `path`, handing each audit line to `visit`.
pub fn for_each_line(
    path: &Path,
    mut visit: impl FnMut(&AuditLine<'_>),
) -> anyhow::Result<ReadStats> {
    let mut reader = open(path)?;
    let mut stats = ReadStats::default();
    let mut buf = Vec::with_capacity(1024);
    loop {
        buf.clear();
        let line = next_line(&mut reader, &mut buf)
            .with_context(|| format!("cannot read audit file {}", path.display()))?;
        match line {
            Line::End => return Ok(stats),
            Line::TooLong => stats.malformed += 1,
            Line::Text => {
                let text = trim_line(&buf);
                if text.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match serde_json::from_slice::<AuditLine<'_>>(text) {
                    Ok(line) => {
                        stats.lines += 1;
                        visit(&line);
                    }
                    Err(_) => stats.malformed += 1,
                }
            }
        }
    }
}

enum Line {
    /// `buf` holds one line (without its newline).
    Text,
    /// The line was longer than [`MAX_LINE_BYTES`] and was skipped to its end.
    TooLong,
    End,
}

/// Reads up to the next `\n` into `buf`, keeping at most [`MAX_LINE_BYTES`].
fn next_line(reader: &mut dyn BufRead, buf: &mut Vec<u8>) -> std::io::Result<Line> {
    let mut too_long = false;
    let mut any = false;
    loop {
        let chunk = match reader.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(match (any, too_long) {
                (false, _) => Line::End,
                (true, true) => Line::TooLong,
                (true, false) => Line::Text,
            });
        }
        any = true;
        let (piece, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        if !too_long {
            if buf.len() + piece.len() > MAX_LINE_BYTES {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(piece);
            }
        }
        let used = done.unwrap_or(chunk.len());
        reader.consume(used);
        if done.is_some() {
            return Ok(if too_long { Line::TooLong } else { Line::Text });
        }
    }
}

fn trim_line(buf: &[u8]) -> &[u8] {
    buf.strip_suffix(b"\r").unwrap_or(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    const LINE: &str = r#"{"timestamp":"2026-01-01T00:00:00.000000Z","request_id":"r","trace_id":"t","client_ip":"127.0.0.1","method":"GET","host":"h","path":"/a\/b","route":"orders","decision":"deny","reason":"forbidden","rule":null,"enforced":false,"identity":{"type":"service","sub":"billing","email":null,"issuer":"https://i","client_id":"billing","groups":[],"workload":null},"status":200,"duration_ms":1.5,"upstream_ms":null,"bytes_out":3}"#;

    fn read(bytes: &[u8]) -> (ReadStats, Vec<String>) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let mut seen = Vec::new();
        let stats = for_each_line(f.path(), |l| {
            seen.push(format!(
                "{} {} {:?} {}",
                l.method,
                l.path,
                l.identity.as_ref().map(|i| i.kind),
                l.was_permitted()
            ))
        })
        .unwrap();
        (stats, seen)
    }

    #[test]
    fn parses_lines_and_counts_malformed_ones() {
        let text = format!("{LINE}\nnot json\n\n{{\"method\":\"GET\"}}\r\n{LINE}\r\n{LINE}");
        let (stats, seen) = read(text.as_bytes());
        assert_eq!(stats.lines, 3);
        assert_eq!(stats.malformed, 2);
        assert_eq!(seen[0], "GET /a/b Some(Service) true");
        assert_eq!(
            stats.malformed_note().unwrap(),
            "warning: skipped 2 malformed lines (not an audit line)"
        );
    }

    #[test]
    fn reads_gzip_by_its_magic_bytes() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for _ in 0..1000 {
            writeln!(gz, "{LINE}").unwrap();
        }
        let mut bytes = gz.finish().unwrap();
        // A second member, as `cat a.gz b.gz` makes.
        let mut gz2 = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        writeln!(gz2, "{LINE}").unwrap();
        bytes.extend(gz2.finish().unwrap());
        let (stats, _) = read(&bytes);
        assert_eq!((stats.lines, stats.malformed), (1001, 0));
    }

    #[test]
    fn an_overlong_line_is_skipped_without_being_kept() {
        let long = "x".repeat(MAX_LINE_BYTES + 10);
        let text = format!("{LINE}\n{long}\n{LINE}\n{long}");
        let (stats, _) = read(text.as_bytes());
        assert_eq!((stats.lines, stats.malformed), (2, 2));
    }

    #[test]
    fn a_corrupt_gzip_stream_is_an_error_not_a_panic() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 4])
            .unwrap();
        let err = for_each_line(f.path(), |_| {}).unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot read audit file"),
            "{err:#}"
        );
    }
}
