//! Keys in Arrow's row format as hash-map keys. Short keys (most) are stored
//! inline, so a probe compares them in the hash table's own memory: behind a
//! pointer, that comparison was a cache miss per lookup in a large table.
//! Longer keys are shared by the index and the lists that name them.

use std::sync::Arc;

/// Keys up to this long are stored inline.
const INLINE_KEY: usize = 38;

/// A key in row format, inline when short.
#[derive(Clone)]
pub enum Key {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Shared(Arc<[u8]>),
}

impl Key {
    pub fn new(key: &[u8]) -> Key {
        if key.len() <= INLINE_KEY {
            let mut bytes = [0; INLINE_KEY];
            bytes[..key.len()].copy_from_slice(key);
            Key::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            Key::Shared(key.into())
        }
    }
}

impl std::ops::Deref for Key {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..*len as usize],
            Key::Shared(b) => b,
        }
    }
}

// Hash and equality are those of the bytes, as `Borrow` requires, so the index
// is probed with a `&[u8]`.
impl std::borrow::Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        **self == **other
    }
}

impl Eq for Key {}
