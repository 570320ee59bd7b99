//! Client bearer tokens: HS256 JWTs with the user (`sub`), the session (`sid`) and an expiry.
//! `bankgate token` mints them for development; the gateway verifies them.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id (Drop's, opaque to bankgate).
    pub sub: String,
    /// The session id: one session actor per `sid`.
    pub sid: String,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("user and session ids must be 1 to 128 visible ASCII characters")]
    InvalidId,
    #[error("token lifetime must be between 1 second and 30 days")]
    InvalidTtl,
    #[error("cannot sign token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
    #[error("invalid token: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
}

fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Signs a token for `user` in `session`, valid for `ttl`.
pub fn mint(
    secret: &SecretString,
    user: &str,
    session: &str,
    ttl: Duration,
) -> Result<String, TokenError> {
    if !valid_id(user) || !valid_id(session) {
        return Err(TokenError::InvalidId);
    }
    if ttl.is_zero() || ttl > Duration::from_secs(30 * 24 * 3600) {
        return Err(TokenError::InvalidTtl);
    }
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: user.to_owned(),
        sid: session.to_owned(),
        iat: now,
        exp: now + ttl.as_secs() as i64,
    };
    let key = EncodingKey::from_secret(secret.expose_secret().as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).map_err(TokenError::Sign)
}

/// Verifies tokens: HS256 only, signed with the secret, not expired, with `sub` and `sid`.
/// Built once; the key and the rules are reused for every request.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
    /// Tokens already verified: a client sends the same token many times, and checking the
    /// signature again would give the same answer. Expiry is checked on every use. Keyed by
    /// the token itself: an idle session's entry costs ~170 bytes more than one keyed by a
    /// digest, but a look-up costs no SHA-256, which was a twentieth of a cached read's time.
    verified: moka::sync::Cache<Box<str>, Arc<Claims>>,
}

impl TokenVerifier {
    pub fn new(secret: &SecretString) -> TokenVerifier {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        TokenVerifier {
            key: DecodingKey::from_secret(secret.expose_secret().as_bytes()),
            validation,
            verified: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(std::time::Duration::from_secs(300))
                .build(),
        }
    }

    pub fn verify(&self, token: &str) -> Result<Arc<Claims>, TokenError> {
        if let Some(claims) = self.verified.get(token) {
            let now = jsonwebtoken::get_current_timestamp();
            if u64::try_from(claims.exp).is_ok_and(|exp| exp > now) {
                return Ok(claims);
            }
            self.verified.invalidate(token);
        }
        let claims = Arc::new(self.verify_signature(token)?);
        self.verified.insert(token.into(), claims.clone());
        Ok(claims)
    }

    fn verify_signature(&self, token: &str) -> Result<Claims, TokenError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(TokenError::Invalid)?
            .claims;
        if !valid_id(&claims.sub) || !valid_id(&claims.sid) {
            return Err(TokenError::InvalidId);
        }
        Ok(claims)
    }
}

/// Verifies one token with `secret` (see `TokenVerifier`).
pub fn verify(secret: &SecretString, token: &str) -> Result<Arc<Claims>, TokenError> {
    TokenVerifier::new(secret).verify(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn minted_tokens_verify_with_the_same_secret_only() {
        let token = mint(
            &secret("a-secret-of-at-least-thirty-two-bytes"),
            "user-1",
            "s-1",
            Duration::from_secs(60),
        )
        .unwrap();
        let claims = verify(&secret("a-secret-of-at-least-thirty-two-bytes"), &token).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.sid.as_str()),
            ("user-1", "s-1")
        );
        assert_eq!(claims.exp - claims.iat, 60);
        assert!(verify(&secret("another-secret-of-thirty-two-bytes!!"), &token).is_err());
    }

    #[test]
    fn rejects_bad_ids_and_lifetimes() {
        let s = secret("a-secret-of-at-least-thirty-two-bytes");
        assert!(matches!(
            mint(&s, "", "s", Duration::from_secs(60)),
            Err(TokenError::InvalidId)
        ));
        assert!(matches!(
            mint(&s, "u", "s", Duration::ZERO),
            Err(TokenError::InvalidTtl)
        ));
    }
}
