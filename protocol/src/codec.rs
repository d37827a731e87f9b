//! The inter-node codec: serde types encoded with bincode 2, behind this one module.
//!
//! bincode is pinned to `=2.0.1` (3.0.0 on crates.io is an empty placeholder
//! and the crate is unmaintained), so nothing outside this module names it;
//! swapping the codec means changing only this file. Every payload travels in
//! an [`Envelope`] that carries [`PROTOCOL_VERSION`], so a node can refuse a
//! peer that speaks another version instead of misreading it.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use thiserror::Error;

/// Version of the inter-node protocol; bump on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 6;

/// A payload tagged with the sender's protocol version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The message itself.
    pub payload: T,
}

/// Why bytes could not be turned back into a message.
#[derive(Debug, Error)]
pub enum CodecError {
    /// Encoding failed.
    #[error("encode: {0}")]
    Encode(String),
    /// The bytes are not a valid envelope.
    #[error("decode: {0}")]
    Decode(String),
    /// The peer speaks another protocol version.
    #[error("protocol version {got} not supported (this node speaks {PROTOCOL_VERSION})")]
    Version {
        /// Version found in the envelope.
        got: u16,
    },
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 16 * 1024 * 1024 }>()
}

/// Encodes a payload in a versioned envelope.
pub fn encode<T: Serialize>(payload: &T) -> Result<Vec<u8>, CodecError> {
    let env = Envelope {
        version: PROTOCOL_VERSION,
        payload,
    };
    bincode::serde::encode_to_vec(&env, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a versioned envelope, refusing other protocol versions.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (version, rest): (u16, usize) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if version != PROTOCOL_VERSION {
        return Err(CodecError::Version { got: version });
    }
    let _ = rest;
    let (env, _): (Envelope<T>, usize) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    Ok(env.payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Ping {
        room: String,
        seq: u64,
    }

    #[test]
    fn round_trip_and_version_check() {
        let bytes = encode(&Ping {
            room: "r".into(),
            seq: 9,
        })
        .unwrap();
        let back: Ping = decode(&bytes).unwrap();
        assert_eq!(
            back,
            Ping {
                room: "r".into(),
                seq: 9
            }
        );
        let other = bincode::serde::encode_to_vec(
            Envelope {
                version: PROTOCOL_VERSION + 1,
                payload: Ping {
                    room: "r".into(),
                    seq: 1,
                },
            },
            config(),
        )
        .unwrap();
        assert!(matches!(
            decode::<Ping>(&other),
            Err(CodecError::Version { .. })
        ));
        assert!(decode::<Ping>(&[0xff, 0xff, 0xff]).is_err());
    }
}
