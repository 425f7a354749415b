//! Generating one event type's rows straight into Arrow arrays.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringBuilder, TimestampMillisecondArray};
use arrow::buffer::ScalarBuffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;

use super::fields::{self, Channels, EventRng};
use super::model::{self, Clock, EventType};
use crate::chunk::Chunk;

/// The columns of each event type, in the standard order, with their SQL types.
pub fn columns(table: EventType) -> &'static [(&'static str, &'static str)] {
    match table {
        EventType::Person => &[
            ("id", "BIGINT"),
            ("name", "VARCHAR"),
            ("email_address", "VARCHAR"),
            ("credit_card", "VARCHAR"),
            ("city", "VARCHAR"),
            ("state", "VARCHAR"),
            ("date_time", "TIMESTAMP"),
            ("extra", "VARCHAR"),
        ],
        EventType::Auction => &[
            ("id", "BIGINT"),
            ("item_name", "VARCHAR"),
            ("description", "VARCHAR"),
            ("initial_bid", "BIGINT"),
            ("reserve", "BIGINT"),
            ("date_time", "TIMESTAMP"),
            ("expires", "TIMESTAMP"),
            ("seller", "BIGINT"),
            ("category", "BIGINT"),
            ("extra", "VARCHAR"),
        ],
        EventType::Bid => &[
            ("auction", "BIGINT"),
            ("bidder", "BIGINT"),
            ("price", "BIGINT"),
            ("channel", "VARCHAR"),
            ("url", "VARCHAR"),
            ("date_time", "TIMESTAMP"),
            ("extra", "VARCHAR"),
        ],
    }
}

/// The Arrow type of a generator column's SQL type.
pub fn arrow_type(sql_type: &str) -> DataType {
    match sql_type {
        "BIGINT" => DataType::Int64,
        "TIMESTAMP" => DataType::Timestamp(TimeUnit::Millisecond, None),
        _ => DataType::Utf8,
    }
}

/// The full schema of an event type (every column nullable, like declared columns).
pub fn full_schema(table: EventType) -> SchemaRef {
    Arc::new(Schema::new(
        columns(table)
            .iter()
            .map(|(name, t)| Field::new(*name, arrow_type(t), true))
            .collect::<Vec<_>>(),
    ))
}

/// Generates rows of one event type for given event numbers.
pub struct BatchGenerator {
    table: EventType,
    seed: u64,
    clock: Clock,
    channels: Option<Arc<Channels>>,
    /// The output schema (the relation's columns).
    schema: SchemaRef,
    /// Output column i is generator column `projection[i]`.
    projection: Vec<usize>,
    /// Which generator columns are in the output.
    wanted: Vec<bool>,
    scratch: String,
}

impl BatchGenerator {
    /// `schema`'s columns must be generator columns of `table` (checked when the
    /// source is created); `projection` maps them to generator column indices.
    pub fn new(
        table: EventType,
        seed: u64,
        clock: Clock,
        schema: SchemaRef,
        projection: Vec<usize>,
        channels: Option<Arc<Channels>>,
    ) -> BatchGenerator {
        let mut wanted = vec![false; columns(table).len()];
        for &i in &projection {
            wanted[i] = true;
        }
        let channels = match table {
            EventType::Bid => Some(channels.unwrap_or_else(|| Arc::new(Channels::new(seed)))),
            _ => None,
        };
        BatchGenerator {
            table,
            seed,
            clock,
            channels,
            schema,
            projection,
            wanted,
            scratch: String::with_capacity(256),
        }
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// One row per event number; every number must be an event of this type.
    pub fn generate(&mut self, event_numbers: &[u64]) -> Result<Chunk, arrow::error::ArrowError> {
        debug_assert!(event_numbers
            .iter()
            .all(|n| EventType::of(*n) == self.table));
        let times: Vec<i64> = event_numbers
            .iter()
            .map(|n| self.clock.timestamp_ms(*n))
            .collect();
        let times = ScalarBuffer::from(times);
        let columns = match self.table {
            EventType::Person => self.people(event_numbers, &times),
            EventType::Auction => self.auctions(event_numbers, &times),
            EventType::Bid => self.bids(event_numbers, &times),
        };
        let mut columns: Vec<Option<ArrayRef>> = columns.into_iter().collect();
        let out = self
            .projection
            .iter()
            .map(|&i| {
                columns[i].take().ok_or_else(|| {
                    arrow::error::ArrowError::InvalidArgumentError(format!(
                        "nexmark column {} is selected twice",
                        i
                    ))
                })
            })
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        let batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            out,
            &arrow::record_batch::RecordBatchOptions::new()
                .with_row_count(Some(event_numbers.len())),
        )?;
        Ok(Chunk::new(batch, Int64Array::new(times, None), None))
    }

    fn string_builder(&self, rows: usize, column: usize, bytes_per_row: usize) -> StringBuilder {
        if self.wanted[column] {
            StringBuilder::with_capacity(rows, rows * bytes_per_row)
        } else {
            StringBuilder::new()
        }
    }

    fn people(&mut self, numbers: &[u64], times: &ScalarBuffer<i64>) -> Vec<Option<ArrayRef>> {
        let n = numbers.len();
        let w = self.wanted.clone();
        let mut id = Vec::with_capacity(n);
        let mut name = self.string_builder(n, 1, 12);
        let mut email = self.string_builder(n, 2, 16);
        let mut card = self.string_builder(n, 3, 19);
        let mut city = self.string_builder(n, 4, 8);
        let mut state = self.string_builder(n, 5, 2);
        let mut extra = self.string_builder(n, 7, 140);
        let s = &mut self.scratch;
        for &e in numbers {
            let mut rng = EventRng::for_event(self.seed, e);
            id.push((model::last_base0_person_id(e) + model::FIRST_PERSON_ID) as i64);
            let first = rng.pick(fields::FIRST_NAMES);
            let last = rng.pick(fields::LAST_NAMES);
            let name_len = first.len() + 1 + last.len();
            if w[1] {
                s.clear();
                s.push_str(first);
                s.push(' ');
                s.push_str(last);
                name.append_value(&*s);
            }
            s.clear();
            rng.push_string(s, 7, ' ');
            s.push('@');
            rng.push_string(s, 5, ' ');
            s.push_str(".com");
            let email_len = s.len();
            if w[2] {
                email.append_value(&*s);
            }
            s.clear();
            for g in 0..4 {
                if g > 0 {
                    s.push(' ');
                }
                let d = rng.below(10_000);
                push_4_digits(s, d);
            }
            if w[3] {
                card.append_value(&*s);
            }
            let c = rng.pick(fields::US_CITIES);
            let st = rng.pick(fields::US_STATES);
            if w[4] {
                city.append_value(c);
            }
            if w[5] {
                state.append_value(st);
            }
            if w[7] {
                let size = 8 + name_len + email_len + 19 + c.len() + st.len();
                s.clear();
                rng.push_extra(s, size, fields::AVG_PERSON_BYTES);
                extra.append_value(&*s);
            }
        }
        vec![
            Some(Arc::new(Int64Array::from(id))),
            w[1].then(|| Arc::new(name.finish()) as ArrayRef),
            w[2].then(|| Arc::new(email.finish()) as ArrayRef),
            w[3].then(|| Arc::new(card.finish()) as ArrayRef),
            w[4].then(|| Arc::new(city.finish()) as ArrayRef),
            w[5].then(|| Arc::new(state.finish()) as ArrayRef),
            Some(timestamps(times)),
            w[7].then(|| Arc::new(extra.finish()) as ArrayRef),
        ]
    }

    fn auctions(&mut self, numbers: &[u64], times: &ScalarBuffer<i64>) -> Vec<Option<ArrayRef>> {
        let n = numbers.len();
        let w = self.wanted.clone();
        let mut id = Vec::with_capacity(n);
        let mut item_name = self.string_builder(n, 1, 12);
        let mut description = self.string_builder(n, 2, 52);
        let mut initial_bid = Vec::with_capacity(n);
        let mut reserve = Vec::with_capacity(n);
        let mut expires = Vec::with_capacity(n);
        let mut seller = Vec::with_capacity(n);
        let mut category = Vec::with_capacity(n);
        let mut extra = self.string_builder(n, 9, 400);
        let s = &mut self.scratch;
        for (&e, &ts) in numbers.iter().zip(times.iter()) {
            let mut rng = EventRng::for_event(self.seed, e);
            id.push((model::last_base0_auction_id(e) + model::FIRST_AUCTION_ID) as i64);
            // Most auctions are sold by the current hot seller.
            let base0_seller = if rng.below(model::HOT_SELLER_RATIO) > 0 {
                (model::last_base0_person_id(e) / model::HOT_SELLER_RATIO) * model::HOT_SELLER_RATIO
            } else {
                model::next_base0_person_id(e, &mut rng)
            };
            seller.push((base0_seller + model::FIRST_PERSON_ID) as i64);
            category.push((model::FIRST_CATEGORY_ID + rng.below(model::NUM_CATEGORIES)) as i64);
            let initial = rng.price();
            initial_bid.push(initial);
            expires.push(ts + self.clock.auction_length_ms(e, ts, &mut rng));
            s.clear();
            rng.push_string(s, 20, ' ');
            let name_len = s.len();
            if w[1] {
                item_name.append_value(&*s);
            }
            s.clear();
            rng.push_string(s, 100, ' ');
            let desc_len = s.len();
            if w[2] {
                description.append_value(&*s);
            }
            reserve.push(initial + rng.price());
            if w[9] {
                s.clear();
                rng.push_extra(s, 8 + name_len + desc_len + 40, fields::AVG_AUCTION_BYTES);
                extra.append_value(&*s);
            }
        }
        vec![
            Some(Arc::new(Int64Array::from(id))),
            w[1].then(|| Arc::new(item_name.finish()) as ArrayRef),
            w[2].then(|| Arc::new(description.finish()) as ArrayRef),
            Some(Arc::new(Int64Array::from(initial_bid))),
            Some(Arc::new(Int64Array::from(reserve))),
            Some(timestamps(times)),
            Some(Arc::new(TimestampMillisecondArray::from(expires))),
            Some(Arc::new(Int64Array::from(seller))),
            Some(Arc::new(Int64Array::from(category))),
            w[9].then(|| Arc::new(extra.finish()) as ArrayRef),
        ]
    }

    fn bids(&mut self, numbers: &[u64], times: &ScalarBuffer<i64>) -> Vec<Option<ArrayRef>> {
        let n = numbers.len();
        let w = self.wanted.clone();
        let mut auction = Vec::with_capacity(n);
        let mut bidder = Vec::with_capacity(n);
        let mut price = Vec::with_capacity(n);
        let mut channel = self.string_builder(n, 3, 10);
        let mut url = self.string_builder(n, 4, 90);
        let mut extra = self.string_builder(n, 6, 68);
        let s = &mut self.scratch;
        let channels = self.channels.as_deref();
        for &e in numbers {
            let mut rng = EventRng::for_event(self.seed, e);
            // Most bids go to the current hot auction, from the current hot bidder.
            let base0_auction = if rng.below(model::HOT_AUCTION_RATIO) > 0 {
                (model::last_base0_auction_id(e) / model::HOT_AUCTION_RATIO)
                    * model::HOT_AUCTION_RATIO
            } else {
                model::next_base0_auction_id(e, &mut rng)
            };
            auction.push((base0_auction + model::FIRST_AUCTION_ID) as i64);
            let base0_bidder = if rng.below(model::HOT_BIDDER_RATIO) > 0 {
                (model::last_base0_person_id(e) / model::HOT_BIDDER_RATIO) * model::HOT_BIDDER_RATIO
                    + 1
            } else {
                model::next_base0_person_id(e, &mut rng)
            };
            bidder.push((base0_bidder + model::FIRST_PERSON_ID) as i64);
            price.push(rng.price());
            if let Some(channels) = channels {
                let (c, u) = channels.pick(&mut rng);
                if w[3] {
                    channel.append_value(c);
                }
                if w[4] {
                    url.append_value(u);
                }
            }
            if w[6] {
                s.clear();
                rng.push_extra(s, 32, fields::AVG_BID_BYTES);
                extra.append_value(&*s);
            }
        }
        vec![
            Some(Arc::new(Int64Array::from(auction))),
            Some(Arc::new(Int64Array::from(bidder))),
            Some(Arc::new(Int64Array::from(price))),
            w[3].then(|| Arc::new(channel.finish()) as ArrayRef),
            w[4].then(|| Arc::new(url.finish()) as ArrayRef),
            Some(timestamps(times)),
            w[6].then(|| Arc::new(extra.finish()) as ArrayRef),
        ]
    }
}

/// The event times as a TIMESTAMP column, sharing the buffer with the chunk's
/// row times.
fn timestamps(times: &ScalarBuffer<i64>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::new(times.clone(), None))
}

fn push_4_digits(s: &mut String, d: u64) {
    for div in [1000, 100, 10, 1] {
        s.push((b'0' + ((d / div) % 10) as u8) as char);
    }
}
