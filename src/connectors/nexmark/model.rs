//! The Nexmark id and time model: which event an event number is, which person and
//! auction ids exist at that point, and the event's timestamp.
//!
//! This follows the reference generator (Beam / Flink `GeneratorConfig`,
//! `PersonGenerator`, `AuctionGenerator`): out of every 50 consecutive event numbers,
//! 1 is a person, 3 are auctions and 46 are bids. Ids are not counters kept by the
//! generator but functions of the event number, so any event can be generated on
//! its own — which is what lets partitions and restarts generate independently and
//! still agree on every id.

use super::fields::EventRng;

pub const PERSON_PROPORTION: u64 = 1;
pub const AUCTION_PROPORTION: u64 = 3;
pub const BID_PROPORTION: u64 = 46;
pub const PROPORTION_DENOMINATOR: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;

/// Ids start high so that joins find matches even in tiny data sets.
pub const FIRST_PERSON_ID: u64 = 1000;
pub const FIRST_AUCTION_ID: u64 = 1000;
pub const FIRST_CATEGORY_ID: u64 = 10;
pub const NUM_CATEGORIES: u64 = 5;

/// Bids and auctions may refer to a few people / auctions not created yet.
pub const PERSON_ID_LEAD: u64 = 10;
pub const AUCTION_ID_LEAD: u64 = 10;

/// 1 in N bids / auctions picks a random auction / bidder / seller; the rest pick the
/// current "hot" one, which gives the skew the queries are meant to exercise.
pub const HOT_AUCTION_RATIO: u64 = 100;
pub const HOT_BIDDER_RATIO: u64 = 100;
pub const HOT_SELLER_RATIO: u64 = 100;

/// People that bids and auctions pick from (the most recent ones).
pub const NUM_ACTIVE_PEOPLE: u64 = 1000;
/// Auctions that bids pick from (the most recent ones).
pub const NUM_IN_FLIGHT_AUCTIONS: u64 = 100;

/// Events per second of event time unless the source sets `rate` (the reference
/// generator's default first event rate).
pub const DEFAULT_EVENT_RATE: u64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Person,
    Auction,
    Bid,
}

impl EventType {
    pub fn of(event_number: u64) -> EventType {
        let rem = event_number % PROPORTION_DENOMINATOR;
        if rem < PERSON_PROPORTION {
            EventType::Person
        } else if rem < PERSON_PROPORTION + AUCTION_PROPORTION {
            EventType::Auction
        } else {
            EventType::Bid
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EventType::Person => "person",
            EventType::Auction => "auction",
            EventType::Bid => "bid",
        }
    }

    pub fn parse(text: &str) -> Option<EventType> {
        match text.to_ascii_lowercase().as_str() {
            "person" | "people" => Some(EventType::Person),
            "auction" | "auctions" => Some(EventType::Auction),
            "bid" | "bids" => Some(EventType::Bid),
            _ => None,
        }
    }

    pub const ALL: [EventType; 3] = [EventType::Person, EventType::Auction, EventType::Bid];
}

/// Base-0 id of the last person created at or before `event_number`.
// The general formula, kept for other proportions; with one person per 50 events
// the offset is always 0, which clippy notices.
#[allow(clippy::unnecessary_min_or_max)]
pub fn last_base0_person_id(event_number: u64) -> u64 {
    let epoch = event_number / PROPORTION_DENOMINATOR;
    let offset = (event_number % PROPORTION_DENOMINATOR).min(PERSON_PROPORTION - 1);
    epoch * PERSON_PROPORTION + offset
}

/// Base-0 id of the last auction created at or before `event_number` (0 before the
/// first auction: the reference generator's arithmetic would go negative there).
pub fn last_base0_auction_id(event_number: u64) -> u64 {
    let epoch = event_number / PROPORTION_DENOMINATOR;
    let offset = event_number % PROPORTION_DENOMINATOR;
    if offset < PERSON_PROPORTION {
        // Before this epoch's auctions: the last auction of the previous epoch.
        (epoch * AUCTION_PROPORTION).saturating_sub(1)
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        epoch * AUCTION_PROPORTION + AUCTION_PROPORTION - 1
    } else {
        epoch * AUCTION_PROPORTION + offset - PERSON_PROPORTION
    }
}

/// A random active person (base 0), possibly one a few ids ahead of the last created.
pub fn next_base0_person_id(event_number: u64, rng: &mut EventRng) -> u64 {
    let num_people = last_base0_person_id(event_number) + 1;
    let active = num_people.min(NUM_ACTIVE_PEOPLE);
    let n = rng.below(active + PERSON_ID_LEAD);
    num_people - active + n
}

/// A random in-flight auction (base 0), possibly a few ids ahead of the last created.
pub fn next_base0_auction_id(event_number: u64, rng: &mut EventRng) -> u64 {
    let max_auction = last_base0_auction_id(event_number);
    let min_auction = max_auction.saturating_sub(NUM_IN_FLIGHT_AUCTIONS);
    min_auction + rng.below(max_auction - min_auction + 1 + AUCTION_ID_LEAD)
}

/// Event time: event `n` happens `n / event_rate` seconds after the base time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    pub base_time_ms: i64,
    /// Events per second of event time (at least 1).
    pub event_rate: u64,
}

impl Clock {
    pub fn timestamp_ms(&self, event_number: u64) -> i64 {
        // u128: n * 1000 overflows u64 only after 1.8e16 events, but it costs nothing.
        let offset = (event_number as u128 * 1000 / self.event_rate.max(1) as u128) as i64;
        self.base_time_ms.saturating_add(offset)
    }

    /// How long an auction created by `event_number` at `timestamp` stays open: up to
    /// twice the event time it takes to create `NUM_IN_FLIGHT_AUCTIONS` more auctions,
    /// so about that many are open at any time.
    pub fn auction_length_ms(&self, event_number: u64, timestamp: i64, rng: &mut EventRng) -> i64 {
        let events_for_auctions =
            NUM_IN_FLIGHT_AUCTIONS * PROPORTION_DENOMINATOR / AUCTION_PROPORTION;
        let future = self.timestamp_ms(event_number + events_for_auctions);
        let horizon = (future - timestamp).max(0) as u64;
        1 + rng.below((horizon * 2).max(1)) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_mix_is_1_3_46() {
        let mut counts = [0u64; 3];
        for n in 0..50_000 {
            counts[EventType::of(n) as usize] += 1;
        }
        assert_eq!(counts, [1_000, 3_000, 46_000]);
        assert_eq!(EventType::of(0), EventType::Person);
        assert_eq!(EventType::of(1), EventType::Auction);
        assert_eq!(EventType::of(3), EventType::Auction);
        assert_eq!(EventType::of(4), EventType::Bid);
        assert_eq!(EventType::of(50), EventType::Person);
    }

    #[test]
    fn ids_follow_event_numbers() {
        // Person events get consecutive ids, as do auction events.
        let people: Vec<u64> = (0..200)
            .filter(|n| EventType::of(*n) == EventType::Person)
            .map(last_base0_person_id)
            .collect();
        assert_eq!(people, vec![0, 1, 2, 3]);
        let auctions: Vec<u64> = (0..200)
            .filter(|n| EventType::of(*n) == EventType::Auction)
            .map(last_base0_auction_id)
            .collect();
        assert_eq!(auctions, (0..12).collect::<Vec<_>>());
        // Between people the last person id stays put.
        assert_eq!(last_base0_person_id(49), 0);
        assert_eq!(last_base0_person_id(50), 1);
        // Before epoch 1's auctions, the last auction is epoch 0's third one.
        assert_eq!(last_base0_auction_id(50), 2);
        assert_eq!(last_base0_auction_id(0), 0);
    }

    #[test]
    fn random_ids_stay_within_the_active_window() {
        for n in [10u64, 5_000, 1_000_000, 123_456_789] {
            let mut rng = EventRng::for_event(7, n);
            for _ in 0..1000 {
                let p = next_base0_person_id(n, &mut rng);
                let last = last_base0_person_id(n);
                assert!(p <= last + PERSON_ID_LEAD, "{p} > {last}");
                assert!(p + NUM_ACTIVE_PEOPLE > last, "{p} too old for {last}");
                let a = next_base0_auction_id(n, &mut rng);
                let last = last_base0_auction_id(n);
                assert!(a <= last + AUCTION_ID_LEAD);
                assert!(a + NUM_IN_FLIGHT_AUCTIONS >= last);
            }
        }
    }

    #[test]
    fn timestamps_follow_the_event_rate() {
        let clock = Clock {
            base_time_ms: 1_000,
            event_rate: 10_000,
        };
        assert_eq!(clock.timestamp_ms(0), 1_000);
        assert_eq!(clock.timestamp_ms(9), 1_000);
        assert_eq!(clock.timestamp_ms(10), 1_001);
        assert_eq!(clock.timestamp_ms(10_000), 2_000);
        let mut rng = EventRng::for_event(1, 1);
        for _ in 0..100 {
            let len = clock.auction_length_ms(1, 1_000, &mut rng);
            // 1666 events at 10/ms is 166 ms; lengths are 1..=2*166.
            assert!((1..=333).contains(&len), "{len}");
        }
    }
}
