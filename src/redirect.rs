//! Where a user's browser may be sent back to the app once the bank's SCA is done, for a
//! consent and for a payment alike: a `redirect_url` must lie within the app's addresses
//! (`consents.allowed_redirect_urls`), so that the gateway never forwards a browser to an
//! address Drop did not name; and the address the browser is sent to, with the outcome.

use bankgate_sandbox::http::{ApiError, ErrorCode};

/// The rule of `is_allowed` as a regular expression over the URL, for the OpenAPI
/// document: one of the prefixes, at a `/`, `?` or `#` or the URL's end.
pub fn pattern(allowed: &[String]) -> String {
    let escape = |prefix: &str| {
        prefix
            .chars()
            .flat_map(|c| {
                let special = "\\.+*?()|[]{}^$".contains(c);
                special.then_some('\\').into_iter().chain([c])
            })
            .collect::<String>()
    };
    let alternatives: Vec<String> = allowed
        .iter()
        .map(|prefix| {
            let boundary = if prefix.ends_with(['/', '?', '#']) {
                ""
            } else {
                "(?:[/?#]|$)"
            };
            format!("{}{boundary}", escape(prefix))
        })
        .collect();
    format!("^(?:{})", alternatives.join("|"))
}

/// Whether `url` is an absolute http(s) URL, written in printable ASCII as a URI is, within
/// one of the `allowed` prefixes: it starts
/// with one, and the prefix ends at a `/`, `?` or `#` (or the URL), so `https://drop.example`
/// does not admit `https://drop.example.evil.com`.
pub fn is_allowed(url: &str, allowed: &[String]) -> bool {
    let within = |prefix: &String| {
        url.strip_prefix(prefix.as_str()).is_some_and(|rest| {
            prefix.ends_with(['/', '?', '#'])
                || rest.is_empty()
                || rest.starts_with(['/', '?', '#'])
        })
    };
    url.len() <= 2048
        && url.bytes().all(|b| b.is_ascii_graphic())
        && reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        && allowed.iter().any(within)
}

/// `to` as the `Location` of a redirect; an address that cannot be one is refused (422).
pub fn location(to: &str) -> Result<warp::http::Uri, ApiError> {
    to.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::Unprocessable,
            "the redirect URL cannot be followed",
        )
    })
}

/// What a query value keeps as it is: RFC 3986's unreserved characters.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `url` with `pairs` added to its query (`?` or `&`, as the URL has a query already).
pub fn with_outcome(url: &str, pairs: &[(&str, &str)]) -> String {
    let mut joined = url.to_owned();
    for (n, (key, value)) in pairs.iter().enumerate() {
        let separator = if n > 0 || url.contains('?') { '&' } else { '?' };
        joined.push(separator);
        joined.push_str(key);
        joined.push('=');
        joined.extend(percent_encoding::utf8_percent_encode(value, QUERY_VALUE));
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::{is_allowed, pattern};

    #[test]
    fn the_redirect_pattern_escapes_each_prefix_and_marks_its_boundary() {
        let allowed = [
            "https://drop.example/".to_owned(),
            "https://app.drop.no".to_owned(),
        ];
        assert_eq!(
            pattern(&allowed),
            r"^(?:https://drop\.example/|https://app\.drop\.no(?:[/?#]|$))"
        );
    }

    #[test]
    fn a_redirect_must_lie_within_an_allowed_prefix_at_a_boundary() {
        let allowed = [
            "https://drop.example".to_owned(),
            "https://app.drop.no/".to_owned(),
        ];
        for url in [
            "https://drop.example",
            "https://drop.example/connected",
            "https://drop.example?x=1",
            "https://app.drop.no/consents/done",
        ] {
            assert!(is_allowed(url, &allowed), "{url}");
        }
        for url in [
            "https://drop.example.evil.com/",
            "https://drop.examplex/",
            "https://evil.example/https://drop.example/",
            "http://app.drop.no/",
            "https://drop.example/\u{84}",
            "https://drop.example/a b",
            "javascript:alert(1)",
        ] {
            assert!(!is_allowed(url, &allowed), "{url}");
        }
    }
}
