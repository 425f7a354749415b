//! Per-connection settings (`SET 'auto.offset.reset' = 'earliest'`, streamsProperties).

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default)]
pub struct Session {
    /// Properties set with `SET 'name' = 'value'`, keys lower-cased.
    pub properties: BTreeMap<String, String>,
}

impl Session {
    pub fn new() -> Self {
        Self::default()
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

    /// `auto.offset.reset` for push queries; ksqlDB's default is `latest`.
    /// Accepts both `auto.offset.reset` and `ksql.streams.auto.offset.reset`.
    pub fn offset_reset_earliest(&self) -> bool {
        ["auto.offset.reset", "ksql.streams.auto.offset.reset"]
            .iter()
            .filter_map(|k| self.properties.get(*k))
            .any(|v| v.eq_ignore_ascii_case("earliest"))
    }
}
