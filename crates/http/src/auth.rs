//! Who is asking: the [`OwnerResolver`] port and the two resolvers of the single machine.
//!
//! On AWS, API Gateway verifies the JWT and a resolver there reads the `sub` claim from the
//! request context; nothing in the router depends on how the owner is found.

use std::collections::HashMap;
use std::fmt;

use ackflow_core::{Owner, Problem};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

/// Finds the owner of a request. Every `/v1` route asks it once, before anything else.
pub trait OwnerResolver: Send + Sync + fmt::Debug {
    /// Who is asking; `Err(problem)` is answered as it is (normally
    /// [`Problem::unauthorized`], 401).
    // The plain `Problem` keeps implementations simple; it is boxed as soon as it becomes an
    // `ApiError`, and this runs once per request.
    #[allow(clippy::result_large_err)]
    fn resolve(&self, parts: &Parts) -> Result<Owner, Problem>;
}

/// Authentication off: every request belongs to [`Owner::anonymous`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Anonymous;

impl OwnerResolver for Anonymous {
    #[allow(clippy::result_large_err)]
    fn resolve(&self, _parts: &Parts) -> Result<Owner, Problem> {
        Ok(Owner::anonymous())
    }
}

/// Configured bearer tokens, each belonging to an owner (`Authorization: Bearer <token>`).
///
/// Tokens are kept only as SHA-256 digests and a presented token is compared with every one of
/// them without stopping early, so neither the comparison's duration nor a memory dump tells
/// anything about the configured tokens (not even their lengths).
pub struct BearerTokens {
    tokens: Vec<([u8; 32], Owner)>,
}

impl BearerTokens {
    /// Resolves each token of `tokens` to its owner. Empty tokens are ignored: they could only
    /// match an empty credential, which is always refused.
    pub fn new(tokens: HashMap<String, Owner>) -> Self {
        Self {
            tokens: tokens
                .into_iter()
                .filter(|(token, _)| !token.is_empty())
                .map(|(token, owner)| (digest(&token), owner))
                .collect(),
        }
    }

    /// How many tokens are configured.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no token is configured (every request is then refused).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

impl fmt::Debug for BearerTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the digests: they are as good as the tokens for an offline guess.
        f.debug_struct("BearerTokens")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl OwnerResolver for BearerTokens {
    #[allow(clippy::result_large_err)]
    fn resolve(&self, parts: &Parts) -> Result<Owner, Problem> {
        // Authorization is a singleton field (RFC 9110 §11.6.2): two of them are refused rather
        // than one of them picked.
        let mut values = parts.headers.get_all(AUTHORIZATION).iter();
        let (first, second) = (values.next(), values.next());
        let token = first
            .filter(|_| second.is_none())
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .ok_or_else(Problem::unauthorized)?;
        let presented = digest(token);
        let mut found = None;
        // No early exit: every configured token is compared, each in constant time.
        for (candidate, owner) in &self.tokens {
            if constant_time_eq(candidate, &presented) {
                found = Some(owner);
            }
        }
        found.cloned().ok_or_else(Problem::unauthorized)
    }
}

/// The token of an `Authorization: Bearer <token>` value (the scheme is case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim_start();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(authorization: Option<&str>) -> Parts {
        let mut builder = Request::builder().uri("/v1/jobs");
        if let Some(a) = authorization {
            builder = builder.header(AUTHORIZATION, a);
        }
        builder.body(()).expect("request").into_parts().0
    }

    fn tokens() -> BearerTokens {
        BearerTokens::new(HashMap::from([
            (
                "alice-secret".to_owned(),
                Owner::parse("alice").expect("owner"),
            ),
            ("bob-secret".to_owned(), Owner::parse("bob").expect("owner")),
            (String::new(), Owner::parse("nobody").expect("owner")),
        ]))
    }

    #[test]
    fn a_configured_token_resolves_to_its_owner_whatever_the_scheme_case() {
        let t = tokens();
        assert_eq!(t.len(), 2);
        for header in [
            "Bearer alice-secret",
            "bearer alice-secret",
            "BEARER  alice-secret",
        ] {
            assert_eq!(
                t.resolve(&parts(Some(header))).map(|o| o.to_string()),
                Ok("alice".to_owned()),
                "{header}"
            );
        }
    }

    #[test]
    fn missing_malformed_empty_and_unknown_tokens_are_unauthorized() {
        let t = tokens();
        for header in [
            None,
            Some("alice-secret"),
            Some("Basic YWxpY2U6c2VjcmV0"),
            Some("Bearer "),
            Some("Bearer alice-secre"),
            Some("Bearer alice-secretx"),
        ] {
            let problem = t.resolve(&parts(header)).expect_err("refused");
            assert_eq!(problem.status, 401, "{header:?}");
        }
    }

    #[test]
    fn debug_output_shows_no_token_material() {
        let shown = format!("{:?}", tokens());
        assert_eq!(shown, "BearerTokens { tokens: 2 }");
    }

    #[test]
    fn anonymous_resolves_everyone_to_the_anonymous_owner() {
        assert_eq!(Anonymous.resolve(&parts(None)), Ok(Owner::anonymous()));
    }
}
