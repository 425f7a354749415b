//! The server's dead-letter topic: records that could not become rows, rows
//! whose expressions failed, and output records too large for their topic.
//!
//! One writer serves every query, so a bad source record that several queries
//! read is written once: the highest offset written per (relation, partition) is
//! remembered (and kept in `dead_letter_marks.json` in the data directory, so a
//! restart does not write it again once it is past it).

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::connectors::{LogWriter, OutRecord};
use crate::dataflow::RowErrors;
use crate::error::{Result, SluiceError};
use crate::formats::BadRecord;

/// Room kept for the JSON around a truncated field.
const ENVELOPE_BYTES: usize = 4096;

pub struct DeadLetters {
    topic: String,
    writer: tokio::sync::Mutex<Box<dyn LogWriter>>,
    /// (relation, partition) → highest source offset dead-lettered.
    marks: Mutex<BTreeMap<String, i64>>,
    marks_path: Option<PathBuf>,
}

/// Where a bad record came from.
pub struct SourceOf<'a> {
    pub query: &'a str,
    pub relation: &'a str,
    pub topic: &'a str,
}

impl DeadLetters {
    /// `marks_path`: where to keep which source records were written (None: in
    /// memory only).
    pub fn new(topic: String, writer: Box<dyn LogWriter>, marks_path: Option<PathBuf>) -> Self {
        let marks = marks_path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        DeadLetters {
            topic,
            writer: tokio::sync::Mutex::new(writer),
            marks: Mutex::new(marks),
            marks_path,
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes records that could not be decoded, skipping those another query
    /// (or an earlier run) already wrote. Returns how many were written.
    pub async fn bad_records(
        &self,
        from: SourceOf<'_>,
        bad: &[BadRecord],
        position: impl Fn(i32, i64) -> String,
    ) -> Result<u64> {
        // Check, write and mark under the writer's lock: two queries reading the
        // same bad record at once must not both see it as unwritten.
        let mut writer = self.writer.lock().await;
        let fresh: Vec<&BadRecord> = {
            let marks = self.marks.lock();
            bad.iter()
                .filter(|b| {
                    marks
                        .get(&mark_key(from.relation, b.partition))
                        .is_none_or(|&m| b.offset > m)
                })
                .collect()
        };
        if fresh.is_empty() {
            return Ok(0);
        }
        let records = fresh
            .iter()
            .map(|b| OutRecord {
                partition: None,
                timestamp: b.timestamp,
                key: b.key.clone(),
                value: Some(Bytes::from(
                    json!({
                        "kind": "bad_record",
                        "query": from.query,
                        "source": from.relation,
                        "topic": from.topic,
                        "partition": b.partition,
                        "offset": b.offset,
                        "position": position(b.partition, b.offset),
                        "timestamp": b.timestamp,
                        "error": b.reason,
                        "key": b.key.as_deref().map(text),
                        "value": b.value.as_deref().map(text),
                    })
                    .to_string(),
                )),
            })
            .collect();
        let written = self.write_locked(&mut writer, records).await?;
        {
            let mut marks = self.marks.lock();
            for b in &fresh {
                let m = marks
                    .entry(mark_key(from.relation, b.partition))
                    .or_insert(i64::MIN);
                *m = (*m).max(b.offset);
            }
        }
        self.save_marks();
        Ok(written)
    }

    /// Writes rows whose expressions failed (their failing values became NULL).
    pub async fn row_errors(&self, query: &str, errors: &RowErrors) -> Result<u64> {
        let records = errors
            .errors
            .iter()
            .map(|e| {
                let row: Value =
                    serde_json::from_str(&e.row).unwrap_or_else(|_| Value::String(e.row.clone()));
                let (source, partition, offset) = match &e.origin {
                    Some((s, p, o)) => (Some(s.to_string()), Some(*p), Some(*o)),
                    None => (None, None, None),
                };
                OutRecord {
                    partition: None,
                    timestamp: e.rowtime.unwrap_or_else(now_ms),
                    key: None,
                    value: Some(Bytes::from(
                        json!({
                            "kind": "expression_error",
                            "query": query,
                            "operator": errors.operator,
                            "source": source,
                            "partition": partition,
                            "offset": offset,
                            "rowtime": e.rowtime,
                            "error": e.error,
                            "row": row,
                        })
                        .to_string(),
                    )),
                }
            })
            .collect();
        self.write(records).await
    }

    /// Writes output records that were too large for their topic.
    pub async fn oversize(
        &self,
        query: &str,
        topic: &str,
        limit: usize,
        records: Vec<OutRecord>,
    ) -> Result<u64> {
        let records = records
            .into_iter()
            .map(|r| {
                let size = crate::connectors::record_size(&r);
                OutRecord {
                    partition: None,
                    timestamp: r.timestamp,
                    key: None,
                    value: Some(Bytes::from(
                        json!({
                            "kind": "oversize_output",
                            "query": query,
                            "topic": topic,
                            "error": format!(
                                "the record has {size} bytes; '{topic}' takes at most {limit}"
                            ),
                            "key": r.key.as_deref().map(text),
                            "value": r.value.as_deref().map(text),
                        })
                        .to_string(),
                    )),
                }
            })
            .collect();
        self.write(records).await
    }

    /// Sends `records`, each cut to fit the topic (see [`fit`]). Returns how many
    /// were written; a record that cannot be made to fit is logged and skipped.
    async fn write(&self, records: Vec<OutRecord>) -> Result<u64> {
        let mut writer = self.writer.lock().await;
        self.write_locked(&mut writer, records).await
    }

    async fn write_locked(
        &self,
        writer: &mut Box<dyn LogWriter>,
        records: Vec<OutRecord>,
    ) -> Result<u64> {
        let limit = writer.max_record_bytes();
        let total = records.len();
        let fitting: Vec<OutRecord> = records.into_iter().filter_map(|r| fit(r, limit)).collect();
        if fitting.len() < total {
            tracing::warn!(
                topic = %self.topic,
                dropped = total - fitting.len(),
                limit,
                "dead-letter records that do not fit the topic even cut down were not written"
            );
        }
        let n = fitting.len() as u64;
        if n == 0 {
            return Ok(0);
        }
        writer.send(fitting).await.map_err(|e| {
            SluiceError::connector(
                format!("writing to the dead-letter topic '{}'", self.topic),
                e,
            )
        })?;
        writer.flush().await.map_err(|e| {
            SluiceError::connector(
                format!("flushing the dead-letter topic '{}'", self.topic),
                e,
            )
        })?;
        Ok(n)
    }

    /// Forgets which records of `relation` were written (DROP).
    pub fn forget_relation(&self, relation: &str) {
        let prefix = mark_key(relation, 0);
        let prefix = &prefix[..prefix.len() - 1];
        self.marks.lock().retain(|k, _| !k.starts_with(prefix));
        self.save_marks();
    }

    fn save_marks(&self) {
        let Some(path) = &self.marks_path else {
            return;
        };
        let bytes = match serde_json::to_vec(&*self.marks.lock()) {
            Ok(b) => b,
            Err(_) => return,
        };
        let tmp = path.with_extension("json.tmp");
        let saved = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
        if let Err(e) = saved {
            tracing::warn!("could not save {}: {e}", path.display());
        }
    }
}

fn mark_key(relation: &str, partition: i32) -> String {
    format!("{relation}/{partition}")
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Bytes as JSON text: UTF-8 as is, anything else as `\uFFFD` replacements.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `record` made to fit in `limit` bytes: the key is dropped and the large string
/// fields of the JSON value (`value`, `key`, `row`) are cut, marked with
/// `"truncated": true` and their original length. `None` when even that does not
/// fit (the caller counts it).
pub fn fit(mut record: OutRecord, limit: usize) -> Option<OutRecord> {
    if crate::connectors::record_size(&record) <= limit {
        return Some(record);
    }
    record.key = None;
    let value = record.value.take()?;
    let doc: Value = serde_json::from_slice(&value).ok()?;
    // Escaping can make a cut field longer in JSON than in bytes (a control
    // character takes six), so the budget shrinks until the record fits.
    let mut budget = limit.saturating_sub(ENVELOPE_BYTES) / LARGE_FIELDS.len();
    while budget > 0 {
        let bytes = serde_json::to_vec(&cut_fields(doc.clone(), budget)).ok()?;
        if bytes.len() <= limit {
            record.value = Some(Bytes::from(bytes));
            return Some(record);
        }
        budget /= 2;
    }
    None
}

/// The fields of a dead-letter record that can be large.
const LARGE_FIELDS: [&str; 4] = ["value", "key", "row", "error"];

/// `doc` with each large field cut to `budget` bytes and marked.
fn cut_fields(mut doc: Value, budget: usize) -> Value {
    if let Some(obj) = doc.as_object_mut() {
        for field in LARGE_FIELDS {
            let Some(v) = obj.get(field) else { continue };
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Null => continue,
                other => other.to_string(),
            };
            if s.len() > budget {
                let mut cut = budget;
                while cut > 0 && !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                obj.insert(field.into(), Value::String(s[..cut].to_string()));
                obj.insert(format!("{field}_bytes"), json!(s.len()));
                obj.insert("truncated".into(), Value::Bool(true));
            }
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_that_grow_when_escaped_still_fit() {
        let control = "\u{1}".repeat(50_000);
        let value = json!({"kind": "bad_record", "error": control.clone(), "value": control});
        let r = OutRecord {
            partition: None,
            timestamp: 0,
            key: None,
            value: Some(Bytes::from(serde_json::to_vec(&value).unwrap())),
        };
        let out = fit(r, 20_000).expect("cut down until it fits");
        assert!(crate::connectors::record_size(&out) <= 20_000);
        let doc: Value = serde_json::from_slice(out.value.as_deref().unwrap()).unwrap();
        assert_eq!(doc["truncated"], true);
        assert_eq!(doc["error_bytes"], 50_000);
    }

    #[test]
    fn large_fields_are_cut_and_marked() {
        let big = "x".repeat(100_000);
        let r = OutRecord {
            partition: None,
            timestamp: 1,
            key: Some(Bytes::from(vec![b'k'; 50_000])),
            value: Some(Bytes::from(
                json!({"kind": "bad_record", "error": "e", "value": big}).to_string(),
            )),
        };
        let out = fit(r, 20_000).unwrap();
        assert!(out.key.is_none());
        let v: Value = serde_json::from_slice(out.value.as_ref().unwrap()).unwrap();
        assert_eq!(v["truncated"], true);
        assert_eq!(v["value_bytes"], 100_000);
        assert_eq!(v["error"], "e");
        assert!(out.value.unwrap().len() <= 20_000);
    }

    #[test]
    fn small_records_are_left_alone() {
        let r = OutRecord {
            partition: None,
            timestamp: 1,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"{\"value\":\"v\"}")),
        };
        assert_eq!(fit(r.clone(), 1000), Some(r.clone()));
        assert_eq!(fit(r, 2), None, "no room even for the envelope");
    }
}
