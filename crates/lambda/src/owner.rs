//! Who is asking, behind API Gateway HTTP API: [`JwtOwners`].
//!
//! API Gateway's JWT authorizer verifies the token (signature, issuer, audience, expiry) before
//! the function runs and hands over its claims in the request context; the owner is the `sub`
//! claim. Nothing here verifies a token itself: a function reachable without API Gateway (a
//! function URL with auth `NONE`) must not be deployed with a JWT-less route it trusts.

use ackflow_core::{Owner, Problem};
use ackflow_http::OwnerResolver;
use lambda_http::request::RequestContext;
use lambda_http::RequestExt as _;

/// The environment variable that lets requests without an authorizer in (as one anonymous
/// owner). Off unless it is exactly `true`.
pub const ALLOW_ANONYMOUS: &str = "ACKFLOW_ALLOW_ANONYMOUS";

/// Resolves the owner from the JWT authorizer's `sub` claim (API Gateway HTTP API, payload 2.0).
///
/// - A request whose context carries JWT claims belongs to their `sub`; a missing or unusable
///   `sub` is a 401 problem.
/// - A request that went through no authorizer (none in its context, or no API Gateway context
///   at all) belongs to [`Owner::anonymous`] when anonymous access is allowed, and is a 401
///   problem otherwise.
/// - A request authorized some other way (a Lambda or IAM authorizer) names no owner: 401.
#[derive(Debug, Clone, Copy, Default)]
pub struct JwtOwners {
    allow_anonymous: bool,
}

impl JwtOwners {
    /// Only JWT-authorized requests are served.
    pub fn new() -> Self {
        Self {
            allow_anonymous: false,
        }
    }

    /// Requests without an authorizer are served too, as one anonymous owner.
    pub fn allowing_anonymous() -> Self {
        Self {
            allow_anonymous: true,
        }
    }

    /// Reads [`ALLOW_ANONYMOUS`] through `lookup` (the process environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        if lookup(ALLOW_ANONYMOUS).is_some_and(|v| v.trim() == "true") {
            Self::allowing_anonymous()
        } else {
            Self::new()
        }
    }

    /// Whether requests without an authorizer are served.
    pub fn allows_anonymous(&self) -> bool {
        self.allow_anonymous
    }
}

impl OwnerResolver for JwtOwners {
    #[allow(clippy::result_large_err)]
    fn resolve(&self, parts: &lambda_http::http::request::Parts) -> Result<Owner, Problem> {
        let authorizer = match parts.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(context)) => context.authorizer.as_ref(),
            // Other origins (when another crate turns on their `lambda_http` features) carry no
            // JWT authorizer this resolver knows.
            #[allow(unreachable_patterns)]
            Some(_) => None,
            None => None,
        };
        let Some(authorizer) = authorizer else {
            return if self.allow_anonymous {
                Ok(Owner::anonymous())
            } else {
                Err(Problem::unauthorized())
            };
        };
        let sub = authorizer
            .jwt
            .as_ref()
            .and_then(|jwt| jwt.claims.get("sub"))
            .ok_or_else(|| {
                tracing::warn!("authorized request without a JWT 'sub' claim");
                Problem::unauthorized()
            })?;
        Owner::parse(sub.as_str()).map_err(|e| {
            tracing::warn!(error = %e, "unusable JWT 'sub' claim");
            Problem::unauthorized()
        })
    }
}
