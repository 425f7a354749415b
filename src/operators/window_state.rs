//! How window aggregates keep their groups in a state table: the stored key of
//! a window's (or pane's) group, and which groups a checkpoint must write.
//!
//! A group is written when it changed since the last checkpoint and deleted
//! when its window closes, but only if a checkpoint ever wrote it: a window
//! that opens and closes between two checkpoints never reaches RocksDB, and a
//! checkpoint writes the groups that changed, not every group of a window
//! that did.

use crate::error::{Result, SluiceError};

/// Bytes after the group key: window (or pane) end and start. Left out of the
/// vnode, so every window of one key shares a vnode.
pub const TIME_SUFFIX: usize = 16;

/// The state key of a group: its key bytes, then the window's end and start.
pub fn group_key(key: &[u8], end: i64, start: i64, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(key.len() + TIME_SUFFIX);
    out.extend_from_slice(key);
    out.extend_from_slice(&end.to_be_bytes());
    out.extend_from_slice(&start.to_be_bytes());
}

/// The key bytes, end and start of a state key written by [`group_key`].
pub fn parse_group_key(stored: &[u8]) -> Result<(&[u8], i64, i64)> {
    let corrupt = || SluiceError::State("corrupt window state key".into());
    let split = stored.len().checked_sub(TIME_SUFFIX).ok_or_else(corrupt)?;
    let (key, times) = stored.split_at(split);
    let end = i64::from_be_bytes(times[..8].try_into().map_err(|_| corrupt())?);
    let start = i64::from_be_bytes(times[8..].try_into().map_err(|_| corrupt())?);
    Ok((key, end, start))
}

/// Per slot of a window or pane: changed since the last checkpoint, and
/// written by one.
#[derive(Default)]
pub struct SlotChanges {
    changed: Vec<bool>,
    stored: Vec<bool>,
    /// Slots changed since the last checkpoint, each once.
    pending: Vec<u32>,
}

impl SlotChanges {
    /// Records that `slots` changed.
    pub fn mark(&mut self, slots: &[usize]) {
        for &s in slots {
            if s >= self.changed.len() {
                self.changed.resize(s + 1, false);
                self.stored.resize(s + 1, false);
            }
            if !self.changed[s] {
                self.changed[s] = true;
                self.pending.push(s as u32);
            }
        }
    }

    /// Records that `slot` holds what a checkpoint wrote (at restore).
    pub fn mark_stored(&mut self, slot: usize) {
        if slot >= self.stored.len() {
            self.changed.resize(slot + 1, false);
            self.stored.resize(slot + 1, false);
        }
        self.stored[slot] = true;
    }

    pub fn any(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The slots to write at this checkpoint, in slot order; from now on
    /// they count as written and unchanged.
    pub fn take(&mut self) -> Vec<u32> {
        let mut slots = std::mem::take(&mut self.pending);
        slots.sort_unstable();
        for &s in &slots {
            self.changed[s as usize] = false;
            self.stored[s as usize] = true;
        }
        slots
    }

    /// Whether a checkpoint wrote `slot` (its entry must be deleted when the
    /// window closes).
    pub fn stored(&self, slot: usize) -> bool {
        self.stored.get(slot).copied().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_with_negative_times() {
        let mut k = Vec::new();
        group_key(b"abc", -5, -20, &mut k);
        assert_eq!(parse_group_key(&k).unwrap(), (&b"abc"[..], -5, -20));
        group_key(b"", i64::MAX, i64::MIN, &mut k);
        assert_eq!(parse_group_key(&k).unwrap(), (&b""[..], i64::MAX, i64::MIN));
        assert!(parse_group_key(b"short").is_err());
    }

    #[test]
    fn changes_are_taken_once_and_remember_what_was_stored() {
        let mut c = SlotChanges::default();
        assert!(!c.any());
        c.mark(&[2, 0, 2]);
        assert!(c.any());
        assert!(!c.stored(0) && !c.stored(2));
        assert_eq!(c.take(), vec![0, 2]);
        assert!(!c.any());
        assert!(c.stored(0) && !c.stored(1) && c.stored(2));
        c.mark(&[1, 2]);
        assert!(!c.stored(1) && c.stored(2));
        assert_eq!(c.take(), vec![1, 2]);
        assert!(c.stored(1));
        let mut r = SlotChanges::default();
        r.mark_stored(3);
        assert!(r.stored(3) && !r.any());
    }
}
