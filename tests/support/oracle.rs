//! Helpers of the differential tests (results compared with batch SQL): a
//! seeded random generator and query results as text lines. Included with
//! `#[path]` by the tests that need only these.

// Each test binary uses part of this module.
#![allow(dead_code)]

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// xorshift64*: deterministic per seed, good enough to generate test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Every row as its columns joined by `separator` (NULL as `NULL`), sorted.
pub fn text_rows(batches: &[RecordBatch], separator: &str) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let formatters: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formattable column"))
            .collect();
        for r in 0..b.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| f.value(r).to_string())
                    .collect::<Vec<_>>()
                    .join(separator),
            );
        }
    }
    out.sort();
    out
}
