//! Ops API authentication: `Authorization: Bearer <token>` against the configured admin
//! tokens, each named for the audit trail. Tokens are compared as SHA-256 digests in constant
//! time, every configured token checked, so neither length nor position leaks.

use secrecy::ExposeSecret;

use crate::settings::AdminToken;

pub struct AdminTokens {
    tokens: Vec<(String, Vec<u8>)>,
}

fn digest(token: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

impl AdminTokens {
    pub fn new(tokens: &[AdminToken]) -> AdminTokens {
        AdminTokens {
            tokens: tokens
                .iter()
                .map(|t| (t.name.clone(), digest(t.token.expose_secret())))
                .collect(),
        }
    }

    /// Returns the name of the token the header carries, if it is one of ours.
    pub fn check(&self, authorization: Option<&str>) -> Option<&str> {
        let presented = authorization?
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 4096)?;
        let presented = digest(presented);
        let mut found = None;
        for (name, expected) in &self.tokens {
            if aws_lc_rs::constant_time::verify_slices_are_equal(expected, &presented).is_ok() {
                found = Some(name.as_str());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_tokens_pass_and_are_named() {
        let tokens = AdminTokens::new(&[
            AdminToken {
                name: "kari".into(),
                token: "kari-token-of-twenty-four-bytes".into(),
            },
            AdminToken {
                name: "pager".into(),
                token: "pager-token-of-twenty-four-bytes".into(),
            },
        ]);
        assert_eq!(
            tokens.check(Some("Bearer pager-token-of-twenty-four-bytes")),
            Some("pager")
        );
        assert_eq!(
            tokens.check(Some("Bearer kari-token-of-twenty-four-byte")),
            None
        );
        assert_eq!(tokens.check(Some("kari-token-of-twenty-four-bytes")), None);
        assert_eq!(tokens.check(Some("Bearer ")), None);
        assert_eq!(tokens.check(None), None);
    }
}
