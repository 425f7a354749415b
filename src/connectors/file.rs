//! Files as bounded (or tailed) sources: each line of a JSON-lines or delimited
//! file is one record. A path names a file, a directory (its files in name order)
//! or a glob in the last path component (`/data/events-*.jsonl`). Each file is a
//! "partition". A line's offset is the byte position just past it, minus one, so
//! "next offset = offset + 1" (what checkpoints store, as for topics) is the byte
//! where the next line starts, and a restarted query seeks straight there.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::file_access::FileAccess;
use super::{ConnectorError, LogReader, LogRecord, Result, StartFrom};

/// The files `path` names, in name order; each one must be readable under
/// `access` (a link in an allowed directory may point anywhere).
pub fn list_files(path: &str, access: &FileAccess) -> Result<Vec<PathBuf>> {
    let io = |e: std::io::Error| ConnectorError::Io {
        path: path.to_string(),
        source: e,
    };
    let p = Path::new(path);
    let globbed = p
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains('*'));
    let glob_dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Refuse before listing, so a refused directory's contents are not probed.
    if globbed {
        access.readable(&glob_dir.to_string_lossy())?;
    } else {
        access.readable(path)?;
    }
    let mut files: Vec<PathBuf> = if p.is_dir() {
        std::fs::read_dir(p)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| f.is_file())
            .collect()
    } else if globbed {
        let pattern = p
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        std::fs::read_dir(glob_dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| {
                f.is_file()
                    && f.file_name()
                        .is_some_and(|n| glob_match(&pattern, &n.to_string_lossy()))
            })
            .collect()
    } else if p.is_file() {
        vec![p.to_path_buf()]
    } else {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such file or directory",
        )));
    };
    files.sort();
    for f in &files {
        access.readable(&f.to_string_lossy())?;
    }
    Ok(files)
}

/// `*` matches any run of characters; everything else matches itself.
fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(pos) => rest = &rest[pos + part.len()..],
                None => return false,
            }
        }
    }
    rest.is_empty()
}

pub struct FileReader {
    files: Vec<PathBuf>,
    /// Each file's length when opened (the end of a backfill).
    sizes: Vec<u64>,
    /// Byte to start each file at (from a checkpoint).
    start: Vec<u64>,
    current: usize,
    reader: Option<BufReader<File>>,
    /// Byte position of the next unread byte of the current file.
    pos: u64,
    /// Number (0-based) of the next line of the current file.
    line: i64,
    follow: bool,
    /// Line numbers of the last batch's records by (partition, offset), so bad
    /// lines are reported as file:line.
    last_lines: BTreeMap<(i32, i64), i64>,
}

impl FileReader {
    pub fn open(
        path: &str,
        access: &FileAccess,
        start: StartFrom,
        follow: bool,
    ) -> Result<FileReader> {
        let files = list_files(path, access)?;
        let sizes = files
            .iter()
            .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
            .collect();
        let mut first = vec![0u64; files.len()];
        if let StartFrom::Offsets(offsets) = &start {
            for (p, o) in offsets {
                if let Some(slot) = usize::try_from(*p).ok().and_then(|p| first.get_mut(p)) {
                    *slot = u64::try_from(*o).unwrap_or(0);
                }
            }
        }
        Ok(FileReader {
            files,
            sizes,
            start: first,
            current: 0,
            reader: None,
            pos: 0,
            line: 0,
            follow,
            last_lines: BTreeMap::new(),
        })
    }

    fn io(&self, e: std::io::Error) -> ConnectorError {
        ConnectorError::Io {
            path: self
                .files
                .get(self.current)
                .map(|f| f.display().to_string())
                .unwrap_or_default(),
            source: e,
        }
    }

    /// Reads up to `max` lines that are already in the files.
    fn read_available(&mut self, max: usize) -> Result<Vec<LogRecord>> {
        let mut out = Vec::new();
        self.last_lines.clear();
        let now = chrono::Utc::now().timestamp_millis();
        let mut buf = Vec::new();
        while out.len() < max && self.current < self.files.len() {
            if self.reader.is_none() {
                let start = self.start[self.current];
                let mut f = File::open(&self.files[self.current]).map_err(|e| self.io(e))?;
                // Line numbers are for error reports only: count the skipped
                // lines once (a sequential scan, no parsing).
                self.line = if start > 0 {
                    count_lines(&mut f, start).map_err(|e| self.io(e))?
                } else {
                    0
                };
                f.seek(SeekFrom::Start(start)).map_err(|e| self.io(e))?;
                self.reader = Some(BufReader::with_capacity(1 << 20, f));
                self.pos = start;
            }
            let Some(reader) = self.reader.as_mut() else {
                break;
            };
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| ConnectorError::Io {
                    path: self.files[self.current].display().to_string(),
                    source: e,
                })?;
            let complete = buf.last() == Some(&b'\n');
            if n == 0 || (!complete && self.follow && self.current + 1 == self.files.len()) {
                if n > 0 {
                    // A partial last line of a tailed file: wait for the rest.
                    if let Some(r) = self.reader.as_mut() {
                        r.seek_relative(-(n as i64))
                            .map_err(|e| ConnectorError::Io {
                                path: self.files[self.current].display().to_string(),
                                source: e,
                            })?;
                    }
                }
                if self.follow && self.current + 1 == self.files.len() {
                    break; // tail the last file
                }
                self.current += 1;
                self.reader = None;
                continue;
            }
            self.pos += n as u64;
            let offset = self.pos as i64 - 1;
            let line = self.line;
            self.line += 1;
            let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.last_lines.insert((self.current as i32, offset), line);
            out.push(LogRecord {
                partition: self.current as i32,
                offset,
                timestamp: now,
                key: None,
                value: Some(Bytes::copy_from_slice(text)),
            });
        }
        Ok(out)
    }

    /// The file name of a partition (for error reports).
    pub fn file_of(&self, partition: i32) -> Option<&Path> {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.files.get(p))
            .map(|p| p.as_path())
    }
}

#[async_trait]
impl LogReader for FileReader {
    async fn poll(&mut self, max: usize, max_wait: Duration) -> Result<Vec<LogRecord>> {
        let records = self.read_available(max)?;
        if records.is_empty() && self.follow {
            tokio::time::sleep(max_wait.min(Duration::from_millis(100))).await;
        }
        Ok(records)
    }

    async fn caught_up(&mut self) -> Result<bool> {
        Ok(!self.follow && self.current >= self.files.len())
    }

    fn position_unit(&self) -> &'static str {
        "bytes"
    }

    /// Each file's length: the offset after its last line. A followed file's
    /// last length is asked again, it grows.
    fn end_offsets(&self) -> Vec<(i32, i64)> {
        self.sizes
            .iter()
            .enumerate()
            .map(|(i, size)| {
                let size = if self.follow && i + 1 == self.files.len() {
                    std::fs::metadata(&self.files[i]).map_or(*size, |m| m.len())
                } else {
                    *size
                };
                (i as i32, i64::try_from(size).unwrap_or(i64::MAX))
            })
            .collect()
    }

    fn describe_position(&self, partition: i32, offset: i64) -> String {
        let at = match self.last_lines.get(&(partition, offset)) {
            Some(line) => format!("{}", line + 1),
            None => format!("byte {offset}"),
        };
        match self.file_of(partition) {
            Some(f) => format!("{}:{at}", f.display()),
            None => format!("file {partition}, line {at}"),
        }
    }
}

/// Newlines in the first `bytes` bytes of `f`.
fn count_lines(f: &mut File, bytes: u64) -> std::io::Result<i64> {
    use std::io::Read;
    let mut left = bytes;
    let mut count = 0i64;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = f.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        count += buf[..n].iter().filter(|&&b| b == b'\n').count() as i64;
        left -= n as u64;
    }
    Ok(count)
}

/// Appends query results to a file as JSON lines. A stream's rows are written as
/// they are; a table's changes carry an `"op"` field: `{"op":"upsert", ...row}` or
/// `{"op":"delete","key":...}`, so the file can be replayed into the table.
pub struct FileWriter {
    path: PathBuf,
    file: std::io::BufWriter<File>,
    changelog: bool,
}

impl FileWriter {
    pub fn create(path: &str, access: &FileAccess, changelog: bool) -> Result<FileWriter> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |e: std::io::Error| ConnectorError::Io {
            path: path.to_string(),
            source: e,
        };
        let target = access.writable(path)?;
        // O_NOFOLLOW: a link swapped in after the check is not followed either.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&target)
            .map_err(io)?;
        Ok(FileWriter {
            path: PathBuf::from(path),
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            changelog,
        })
    }

    fn io(&self, e: std::io::Error) -> ConnectorError {
        ConnectorError::Io {
            path: self.path.display().to_string(),
            source: e,
        }
    }
}

#[async_trait]
impl super::LogWriter for FileWriter {
    async fn send(&mut self, records: Vec<super::OutRecord>) -> Result<()> {
        use std::io::Write;
        for r in records {
            let line: Vec<u8> = match (self.changelog, &r.value) {
                (false, Some(v)) => v.to_vec(),
                (false, None) => continue,
                (true, Some(v)) => {
                    // Our encoder writes objects: splice the op in after the '{'.
                    let mut line = b"{\"op\":\"upsert\"".to_vec();
                    let rest = v.strip_prefix(b"{").unwrap_or(v);
                    if rest.first() != Some(&b'}') {
                        line.push(b',');
                    }
                    line.extend_from_slice(rest);
                    line
                }
                (true, None) => {
                    let key = r.key.as_deref().unwrap_or_default();
                    let key_json = match serde_json::from_slice::<serde_json::Value>(key) {
                        Ok(v) => v,
                        Err(_) => {
                            serde_json::Value::String(String::from_utf8_lossy(key).into_owned())
                        }
                    };
                    serde_json::json!({"op": "delete", "key": key_json})
                        .to_string()
                        .into_bytes()
                }
            };
            self.file.write_all(&line).map_err(|e| self.io(e))?;
            self.file.write_all(b"\n").map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        use std::io::Write;
        self.file.flush().map_err(|e| self.io(e))?;
        self.file.get_ref().sync_data().map_err(|e| self.io(e))
    }

    /// The file's length once the epoch's lines are synced: after a crash
    /// the file is cut back to the length of the last committed epoch.
    async fn prepare(&mut self, _epoch: u64) -> Result<Vec<u8>> {
        self.flush().await?;
        let len = self
            .file
            .get_ref()
            .metadata()
            .map_err(|e| self.io(e))?
            .len();
        Ok(len.to_be_bytes().to_vec())
    }

    async fn recover(&mut self, _epoch: u64, prepared: Option<&[u8]>) -> Result<()> {
        use std::io::Write;
        let Some(len) = prepared.and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
            return Ok(());
        };
        let len = u64::from_be_bytes(len);
        self.file.flush().map_err(|e| self.io(e))?;
        let file = self.file.get_ref();
        let now = file.metadata().map_err(|e| self.io(e))?.len();
        if now > len {
            tracing::info!(
                path = %self.path.display(),
                committed = len,
                dropped = now - len,
                "cutting off lines written after the last committed checkpoint"
            );
            file.set_len(len)
                .and_then(|_| file.sync_data())
                .map_err(|e| self.io(e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::{LogWriter, OutRecord};

    fn allow(dir: &Path) -> FileAccess {
        FileAccess::new(&[dir.to_path_buf()]).unwrap()
    }

    fn line(text: &str) -> OutRecord {
        OutRecord {
            key: None,
            value: Some(Bytes::copy_from_slice(text.as_bytes())),
            timestamp: 1,
            partition: None,
        }
    }

    #[tokio::test]
    async fn a_file_sink_is_cut_back_to_its_last_committed_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "{\"before\":0}\n").unwrap();
        let path = path.to_str().unwrap();
        let mut w = FileWriter::create(path, &allow(dir.path()), false).unwrap();
        // First start: what the file held is the baseline.
        w.recover(0, None).await.unwrap();
        let base = w.prepare(0).await.unwrap();
        w.send(vec![line("{\"x\":1}")]).await.unwrap();
        let one = w.prepare(1).await.unwrap();
        w.commit(1).await.unwrap();
        w.send(vec![line("{\"x\":2}")]).await.unwrap();
        w.prepare(2).await.unwrap();
        drop(w); // the crash: epoch 2 never committed
        let mut w = FileWriter::create(path, &allow(dir.path()), false).unwrap();
        w.recover(1, Some(&one)).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            "{\"before\":0}\n{\"x\":1}\n"
        );
        w.recover(0, Some(&base)).await.unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), "{\"before\":0}\n");
    }

    #[test]
    fn globs() {
        assert!(glob_match("events-*.jsonl", "events-01.jsonl"));
        assert!(!glob_match("events-*.jsonl", "events-01.csv"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("a*b*c", "aXXbYc"));
        assert!(!glob_match("a*b*c", "aXXbYcd"));
    }

    #[tokio::test]
    async fn reads_files_in_order_and_resumes_from_offsets() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.jsonl"), "{\"x\":3}\n").unwrap();
        std::fs::write(dir.path().join("a.jsonl"), "{\"x\":1}\n\n{\"x\":2}").unwrap();
        let path = dir.path().to_str().unwrap();
        let mut r = FileReader::open(path, &allow(dir.path()), StartFrom::Earliest, false).unwrap();
        let recs = r.poll(100, Duration::from_millis(1)).await.unwrap();
        let got: Vec<(i32, i64, String)> = recs
            .iter()
            .map(|r| {
                (
                    r.partition,
                    r.offset,
                    String::from_utf8_lossy(r.value.as_deref().unwrap()).to_string(),
                )
            })
            .collect();
        // Offsets are the byte just past each line, minus one.
        assert_eq!(
            got,
            vec![
                (0, 7, "{\"x\":1}".into()),
                (0, 15, "{\"x\":2}".into()),
                (1, 7, "{\"x\":3}".into())
            ]
        );
        assert_eq!(
            r.describe_position(0, 15),
            format!("{}:3", dir.path().join("a.jsonl").display())
        );
        assert!(r.caught_up().await.unwrap());
        // Resuming at the next offsets seeks past what was read.
        let mut r = FileReader::open(
            path,
            &allow(dir.path()),
            StartFrom::Offsets(vec![(0, 8), (1, 8)]),
            false,
        )
        .unwrap();
        let recs = r.poll(100, Duration::from_millis(1)).await.unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].offset, 15);
        assert_eq!(
            r.describe_position(0, 15),
            format!("{}:3", dir.path().join("a.jsonl").display())
        );
        let glob = format!("{path}/a*");
        assert_eq!(list_files(&glob, &allow(dir.path())).unwrap().len(), 1);
        assert!(list_files("/no/such/file.jsonl", &allow(dir.path())).is_err());
    }
}
