//! Per-connection settings (`SET 'auto.offset.reset' = 'earliest'`, streamsProperties).

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default)]
pub struct Session {
    /// Properties set with `SET 'name' = 'value'`, keys lower-cased.
    pub properties: BTreeMap<String, String>,
    /// Whether pull query results may come back as [`StatementResult::Stream`]
    /// (read while the client receives them) rather than collected. Protocol
    /// layers that send rows as they come set it; the default collects, so a
    /// caller that wants a `Vec` of batches gets one.
    ///
    /// [`StatementResult::Stream`]: super::StatementResult::Stream
    pub stream_results: bool,
    /// Open cursors (DECLARE ... CURSOR), shared by clones of the session.
    pub cursors: super::cursor::Cursors,
}

impl Session {
    pub fn new() -> Self {
        Self::default()
    }

    /// A session whose pull query results stream (see `stream_results`).
    pub fn streaming(mut self) -> Self {
        self.stream_results = true;
        self
    }

    /// Applies ksqlDB-style `streamsProperties` from an HTTP request.
    pub fn with_properties<'a>(
        mut self,
        props: impl IntoIterator<Item = (&'a str, String)>,
    ) -> Self {
        for (k, v) in props {
            self.properties.insert(k.to_ascii_lowercase(), v);
        }
        self
    }

    /// The processing guarantee set for queries this session creates
    /// (`SET 'processing.guarantee' = 'exactly_once_v2'`, as in ksqlDB), if any.
    pub fn processing_guarantee(&self) -> Option<&str> {
        [
            "processing.guarantee",
            "ksql.streams.processing.guarantee",
            "processing_guarantee",
        ]
        .iter()
        .find_map(|k| self.properties.get(*k))
        .map(String::as_str)
    }

    /// `auto.offset.reset` for push queries; ksqlDB's default is `latest`.
    /// Accepts both `auto.offset.reset` and `ksql.streams.auto.offset.reset`.
    pub fn offset_reset_earliest(&self) -> bool {
        ["auto.offset.reset", "ksql.streams.auto.offset.reset"]
            .iter()
            .filter_map(|k| self.properties.get(*k))
            .any(|v| v.eq_ignore_ascii_case("earliest"))
    }
}
