//! HS256 access tokens (JWT).

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Username.
    pub name: String,
    /// Issued at (seconds since epoch).
    pub iat: u64,
    /// Expiry (seconds since epoch).
    pub exp: u64,
}

/// Issues and checks access tokens.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Lifetime of issued tokens in seconds.
    pub ttl_secs: u64,
}

/// How long past its `exp` a token is still accepted, seconds: room for
/// clocks that differ between the node that issued it and the one that
/// checks it. A WebSocket session lasts as long as its token is accepted.
pub const LEEWAY_SECS: u64 = 5;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenKeys {
    /// Keys from a secret.
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        // Only HS256 is accepted: `alg: none` and every other algorithm are refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl_secs,
        }
    }

    /// A new access token for a user.
    pub fn issue(
        &self,
        user_id: &str,
        username: &str,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = now_secs();
        let claims = Claims {
            sub: user_id.to_string(),
            name: username.to_string(),
            iat,
            exp: iat + self.ttl_secs,
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// The claims of a valid, unexpired token signed with our secret.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let keys = TokenKeys::new(b"0123456789abcdef0123", 60);
        let t = keys.issue("u1", "alice").unwrap();
        assert_eq!(keys.verify(&t).unwrap().sub, "u1");
        let other = TokenKeys::new(b"another-secret-entirely", 60);
        assert!(other.verify(&t).is_none());
        assert!(keys.verify("garbage").is_none());
        // alg none
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(format!(
            r#"{{"sub":"u1","name":"a","iat":0,"exp":{}}}"#,
            now_secs() + 100
        ));
        assert!(keys.verify(&format!("{header}.{body}.")).is_none());
        // expired
        let claims = Claims {
            sub: "u1".into(),
            name: "a".into(),
            iat: 0,
            exp: now_secs() - 100,
        };
        let expired = encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap();
        assert!(keys.verify(&expired).is_none());
    }
}
