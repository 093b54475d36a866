//! Mutations of valid inputs for fuzz tests: bytes replaced, the end cut, a byte or a
//! run of one byte inserted. Bytes that open a nesting level are picked often: deep
//! nesting once overflowed a worker's stack.

use proptest::prelude::*;

/// One edit: (position, byte, kind); a position past the end wraps around.
pub type Edit = (usize, u8, u8);

/// Bytes that open a nesting level in JSON or MessagePack, or a string.
const OPENERS: &[u8] = b"[{\x91\x81\xdc\"";

/// Up to 8 random edits.
pub fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let byte = prop_oneof![any::<u8>(), prop::sample::select(OPENERS)];
    prop::collection::vec((any::<usize>(), byte, any::<u8>()), 0..8)
}

/// `seed` with `edits` applied in order.
pub fn apply(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for &(at, byte, kind) in edits {
        let at = at % (bytes.len() + 1);
        match kind % 4 {
            0 if at < bytes.len() => bytes[at] = byte,
            1 => bytes.truncate(at),
            2 => bytes.insert(at, byte),
            _ => drop(bytes.splice(at..at, std::iter::repeat_n(byte, 2000 + at % 2000))),
        }
    }
    bytes
}

/// One of the JSON `seeds`, as it is or converted to MessagePack, with random edits.
pub fn json_or_msgpack(seeds: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    let seeds = (prop::sample::select(seeds), any::<bool>());
    (seeds, edits()).prop_map(|((seed, msgpack), edits)| {
        let seed = match msgpack {
            true => {
                let value: serde_json::Value = serde_json::from_str(seed).unwrap();
                rmp_serde::to_vec_named(&value).unwrap()
            }
            false => seed.as_bytes().to_vec(),
        };
        apply(&seed, &edits)
    })
}
