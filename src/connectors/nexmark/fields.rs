//! Random field values: a small per-event random number generator and the value
//! generators of the reference Nexmark generator (names, cities, prices, strings,
//! padding), writing into reusable buffers so generating a row allocates nothing.

use std::fmt::Write;

/// A SplitMix64 generator seeded from (seed, event number).
///
/// Every event gets its own generator, as in the reference generator (which seeds
/// `java.util.Random` with the event id): an event's fields depend only on the seed
/// and its event number, never on what was generated before it, so partitions,
/// batch sizes and restarts cannot change the data.
#[derive(Debug, Clone)]
pub struct EventRng {
    state: u64,
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl EventRng {
    pub fn for_event(seed: u64, event_number: u64) -> EventRng {
        // Mixing the event number before combining it with the seed keeps
        // neighbouring events' streams unrelated.
        EventRng {
            state: mix64(seed.wrapping_mul(GOLDEN_GAMMA) ^ mix64(event_number.wrapping_add(1))),
        }
    }

    /// A generator for values that belong to the source rather than to one event
    /// (the channel URLs).
    pub fn for_source(seed: u64, stream: u64) -> EventRng {
        EventRng {
            state: mix64(seed ^ 0x6e65_786d_6172_6b00 ^ stream),
        }
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for the
    /// ranges used here). `n` must be positive.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in [0, 1).
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Appends `len` random lower-case letters. Each 64-bit draw yields several
    /// letters (base-26 digits of a random fraction), which keeps the padding
    /// fields — most of a row's bytes — cheap.
    pub fn push_letters(&mut self, out: &mut String, len: usize) {
        let mut left = len;
        while left > 0 {
            let mut r = self.next_u64();
            // 26^8 < 2^38, so eight digits still leave 26 bits of fraction.
            for _ in 0..left.min(8) {
                let m = r as u128 * 26;
                out.push((b'a' + (m >> 64) as u8) as char);
                r = m as u64;
            }
            left -= left.min(8);
        }
    }

    /// Appends a random string of 3..max_len characters: letters with one in 13
    /// replaced by `special`, trimmed of spaces like the reference generator's
    /// `nextString`.
    pub fn push_string(&mut self, out: &mut String, max_len: usize, special: char) {
        let start = out.len();
        let len = 3 + self.below((max_len - 3) as u64) as usize;
        let mut left = len;
        while left > 0 {
            let mut r = self.next_u64();
            // 338 = 13 * 26: one value in 13 is the special character, the rest are
            // letters with equal weight; 338^6 < 2^51.
            for _ in 0..left.min(6) {
                let m = r as u128 * 338;
                let d = (m >> 64) as u32;
                r = m as u64;
                if d < 26 {
                    out.push(special);
                } else {
                    out.push((b'a' + ((d - 26) % 26) as u8) as char);
                }
            }
            left -= left.min(6);
        }
        if special == ' ' {
            let s = &out[start..];
            let lead = s.len() - s.trim_start().len();
            let keep = s.trim().len();
            out.replace_range(start..start + lead, "");
            out.truncate(start + keep);
        }
    }

    /// A price in cents: 10^(0..6) dollars, log-uniform (the reference `nextPrice`).
    #[inline]
    pub fn price(&mut self) -> i64 {
        (10f64.powf(self.next_f64() * 6.0) * 100.0).round() as i64
    }

    /// Appends padding so the row's size averages `average` bytes (±20%), given the
    /// `current` bytes of its other fields (the reference `nextExtra`).
    pub fn push_extra(&mut self, out: &mut String, current: usize, average: usize) {
        if current > average {
            return;
        }
        let desired = average - current;
        let delta = (desired as f64 * 0.2).round() as usize;
        let size = desired - delta
            + if delta == 0 {
                0
            } else {
                self.below(2 * delta as u64) as usize
            };
        self.push_letters(out, size);
    }

    pub fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        options[self.below(options.len() as u64) as usize]
    }
}

pub const US_STATES: &[&str] = &["AZ", "CA", "ID", "OR", "WA", "WY"];
pub const US_CITIES: &[&str] = &[
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
pub const FIRST_NAMES: &[&str] = &[
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
pub const LAST_NAMES: &[&str] = &[
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];

/// Average row sizes in bytes that the padding (`extra`) aims at.
pub const AVG_PERSON_BYTES: usize = 200;
pub const AVG_AUCTION_BYTES: usize = 500;
pub const AVG_BID_BYTES: usize = 100;

/// Half of all bids come through one of a few hot channels.
pub const HOT_CHANNELS_RATIO: u64 = 2;
pub const HOT_CHANNELS: &[&str] = &["Google", "Facebook", "Baidu", "Apple"];
/// The other bids come through one of this many channels.
pub const CHANNELS_NUMBER: usize = 10_000;

/// Channel names and URLs, fixed per seed: bids pick from them rather than build a
/// URL each (the reference generator caches them the same way).
#[derive(Debug)]
pub struct Channels {
    /// `channel-N` names, then the hot channels' URLs, then the other URLs, one
    /// after another; `offsets` has the bounds.
    text: String,
    offsets: Vec<u32>,
}

impl Channels {
    pub fn new(seed: u64) -> Channels {
        let mut rng = EventRng::for_source(seed, 1);
        let mut text = String::with_capacity(CHANNELS_NUMBER * 80);
        let mut offsets = Vec::with_capacity(2 * CHANNELS_NUMBER + HOT_CHANNELS.len() + 1);
        offsets.push(0);
        let end = |text: &mut String, offsets: &mut Vec<u32>| offsets.push(text.len() as u32);
        for i in 0..CHANNELS_NUMBER {
            let _ = write!(text, "channel-{i}");
            end(&mut text, &mut offsets);
        }
        for _ in HOT_CHANNELS {
            base_url(&mut rng, &mut text);
            end(&mut text, &mut offsets);
        }
        for i in 0..CHANNELS_NUMBER {
            base_url(&mut rng, &mut text);
            // Most channel URLs carry the channel id (bit-reversed, as in the
            // reference generator, so ids do not sort like channels).
            if rng.below(10) > 0 {
                let _ = write!(
                    text,
                    "&channel_id={}",
                    (i as i32).reverse_bits().unsigned_abs()
                );
            }
            end(&mut text, &mut offsets);
        }
        Channels { text, offsets }
    }

    fn get(&self, i: usize) -> &str {
        &self.text[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// (channel, url) of a bid: `hot` picks one of the hot channels.
    pub fn pick(&self, rng: &mut EventRng) -> (&str, &str) {
        if rng.below(HOT_CHANNELS_RATIO) > 0 {
            let i = rng.below(HOT_CHANNELS.len() as u64) as usize;
            (HOT_CHANNELS[i], self.get(CHANNELS_NUMBER + i))
        } else {
            let i = rng.below(CHANNELS_NUMBER as u64) as usize;
            (
                self.get(i),
                self.get(CHANNELS_NUMBER + HOT_CHANNELS.len() + i),
            )
        }
    }
}

fn base_url(rng: &mut EventRng, out: &mut String) {
    out.push_str("https://www.nexmark.com/");
    rng.push_string(out, 5, '_');
    out.push('/');
    rng.push_string(out, 5, '_');
    out.push('/');
    rng.push_string(out, 5, '_');
    out.push_str("/item.htm?query=1");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_and_event_same_values() {
        let a: Vec<u64> = {
            let mut r = EventRng::for_event(3, 17);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = EventRng::for_event(3, 17);
            (0..5).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(EventRng::for_event(3, 18).next_u64(), a[0]);
        assert_ne!(EventRng::for_event(4, 17).next_u64(), a[0]);
    }

    #[test]
    fn strings_have_the_reference_shapes() {
        let mut rng = EventRng::for_event(1, 1);
        let mut letters = [0usize; 26];
        for _ in 0..1000 {
            let mut s = String::new();
            rng.push_string(&mut s, 20, ' ');
            assert!(s.len() < 20, "{s:?}");
            assert_eq!(s, s.trim());
            assert!(s.chars().all(|c| c == ' ' || c.is_ascii_lowercase()));
            let mut l = String::new();
            rng.push_letters(&mut l, 50);
            assert_eq!(l.len(), 50);
            for b in l.bytes() {
                letters[(b - b'a') as usize] += 1;
            }
        }
        // 50,000 letters: each of 26 expected ~1923 times.
        assert!(
            letters.iter().all(|&c| (1600..2300).contains(&c)),
            "{letters:?}"
        );
    }

    #[test]
    fn prices_and_padding_are_in_range() {
        let mut rng = EventRng::for_event(9, 9);
        for _ in 0..1000 {
            let p = rng.price();
            assert!((100..=100_000_000).contains(&p), "{p}");
            let mut s = String::new();
            rng.push_extra(&mut s, 32, AVG_BID_BYTES);
            // 68 ± 20%: 54..=81.
            assert!((54..=81).contains(&s.len()), "{}", s.len());
        }
        let mut s = String::new();
        rng.push_extra(&mut s, 300, AVG_BID_BYTES);
        assert!(s.is_empty());
    }

    #[test]
    fn channels_pair_names_with_urls() {
        let channels = Channels::new(5);
        let mut rng = EventRng::for_event(5, 0);
        let mut hot = 0;
        for _ in 0..2000 {
            let (channel, url) = channels.pick(&mut rng);
            assert!(url.starts_with("https://www.nexmark.com/"), "{url}");
            if HOT_CHANNELS.contains(&channel) {
                hot += 1;
            } else {
                assert!(channel.starts_with("channel-"), "{channel}");
            }
        }
        assert!((800..1200).contains(&hot), "{hot}");
    }
}
