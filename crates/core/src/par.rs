//! Pushed authorization requests (RFC 9126) and signed request objects
//! (RFC 9101, JAR): what a client may push, the `request_uri` it gets back,
//! the claims of a request object, and the token that lets the sign-in and
//! consent pages bring a pushed request back to the authorization endpoint.
//!
//! A pushed request is held by the server (any node reads it) until its
//! `request_uri` first arrives at the authorization endpoint, which takes
//! it once; from then on the pages carry `client_id`, `request_uri` and
//! the [`resume_token`] only, so the parameters are always the pushed ones.

use serde_json::Value;

use crate::authorize::AuthorizeParams;
use crate::error::{ErrorCode, OAuthError};
use crate::secret::{self, Minted, SecretKind};

/// RFC 9126 §2.2: every `request_uri` this server gives starts so.
pub const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";

/// How long a `request_uri` may be set to live (`[par] lifetime`): RFC
/// 9126 §2.2 suggests between 5 and 600 seconds; less than a minute is
/// too short for a browser on a slow network.
pub const LIFETIME_RANGE: std::ops::RangeInclusive<i64> = 60..=600;

/// How long after its `request_uri` arrived a pushed request may still be
/// brought back by the sign-in and consent pages (sign-in, a second factor,
/// a new password, consent).
pub const RESUME_TTL: i64 = 1800;

/// A new `request_uri`: the URN and the digest it is kept by.
pub fn new_request_uri() -> Minted {
    let random = secret::mint(SecretKind::PushedRequest);
    let value = format!("{REQUEST_URI_PREFIX}{}", random.value);
    Minted {
        digest: secret::digest(&value),
        value,
    }
}

/// Whether `request_uri` is one this server could have given (RFC 9101
/// §6.2: any other is `request_uri_not_supported`: nothing is fetched).
pub fn is_pushed(request_uri: &str) -> bool {
    request_uri.starts_with(REQUEST_URI_PREFIX)
}

/// The token the pages carry with a pushed request that arrived: bound to
/// the request by the instance key, and given only to the browser that
/// brought the `request_uri` first.
pub fn resume_token(key: &[u8], request_digest: &str) -> String {
    secret::keyed_digest(key, "pushed-request-resume", &[request_digest])
}

/// Whether `presented` is the resume token of the request kept by
/// `request_digest`.
pub fn resume_holds(key: &[u8], request_digest: &str, presented: &str) -> bool {
    secret::constant_time_eq(&resume_token(key, request_digest), presented)
}

/// Parameters of a token or PAR request that authenticate the client: not
/// part of the authorization request a client pushes.
const CLIENT_AUTH: &[&str] = &["client_secret", "client_assertion", "client_assertion_type"];

/// The authorization request in a PAR body (RFC 9126 §2.1): everything but
/// the client's credentials. `request_uri` must not be pushed.
pub fn pushed_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<(&'a str, &'a str)>, OAuthError> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        match k {
            "request_uri" => {
                return Err(OAuthError::invalid_request(
                    "request_uri cannot be pushed: push the request's parameters",
                ));
            }
            k if CLIENT_AUTH.contains(&k) => {}
            _ => out.push((k, v)),
        }
    }
    Ok(out)
}

/// A request object's `typ` (RFC 9101 §10.8), when it has one.
const REQUEST_OBJECT_TYPES: &[&str] = &["oauth-authz-req+jwt", "JWT", "jwt"];

/// The longest a request object may be valid from when it was made
/// (`exp` after `nbf`, or after now): an hour, as FAPI 2.0 asks.
pub const REQUEST_OBJECT_MAX_LIFETIME: i64 = 3600;

/// How far a request object's `nbf` or `iat` may be ahead of this
/// server's clock.
const SKEW: i64 = 60;

fn invalid_object(why: impl std::fmt::Display) -> OAuthError {
    OAuthError::new(
        ErrorCode::InvalidRequestObject,
        format!("request object: {why}"),
    )
}

/// The authorization request a verified request object carries (RFC 9101
/// §4, §6.3), from `client_id` for the server `issuer` at `now`: `iss` is
/// the client, `aud` the issuer, a `client_id` claim the client's, `exp`
/// ahead and at most [`REQUEST_OBJECT_MAX_LIFETIME`] away, `nbf` not in the
/// future; no `request` or `request_uri` inside. The parameters are its
/// claims (strings, or numbers written out); other claims are ignored.
pub fn request_object_params(
    header: &Value,
    claims: &Value,
    client_id: &str,
    issuer: &str,
    now: i64,
) -> Result<Vec<(String, String)>, OAuthError> {
    if let Some(typ) = header.get("typ") {
        let known = typ.as_str().is_some_and(|t| {
            REQUEST_OBJECT_TYPES.contains(&t)
                || t.eq_ignore_ascii_case("application/oauth-authz-req+jwt")
        });
        if !known {
            return Err(invalid_object("typ must be oauth-authz-req+jwt"));
        }
    }
    if claims["iss"].as_str() != Some(client_id) {
        return Err(invalid_object("iss must be the client_id"));
    }
    if claims
        .get("client_id")
        .is_some_and(|c| c.as_str() != Some(client_id))
    {
        return Err(invalid_object("its client_id is not the client's"));
    }
    let aud_ok = match &claims["aud"] {
        Value::Array(all) => all.iter().any(|a| a.as_str() == Some(issuer)),
        one => one.as_str() == Some(issuer),
    };
    if !aud_ok {
        return Err(invalid_object(format!("aud must be the issuer, {issuer}")));
    }
    let Some(exp) = claims["exp"].as_i64() else {
        return Err(invalid_object("exp is required"));
    };
    if exp <= now {
        return Err(invalid_object("it has expired"));
    }
    let from = claims["nbf"].as_i64().unwrap_or(now);
    if from > now + SKEW {
        return Err(invalid_object("it is not valid yet (nbf)"));
    }
    if claims["iat"].as_i64().is_some_and(|iat| iat > now + SKEW) {
        return Err(invalid_object("it was made in the future (iat)"));
    }
    if exp - from.min(now) > REQUEST_OBJECT_MAX_LIFETIME {
        return Err(invalid_object("it may be valid for an hour at most"));
    }
    let mut params = Vec::new();
    let Some(all) = claims.as_object() else {
        return Err(invalid_object("its claims are not a JSON object"));
    };
    for (name, value) in all {
        if name == "request" || name == "request_uri" {
            return Err(invalid_object(format!("it must not contain {name}")));
        }
        // `resume` is the server's own, never the client's; `aud` is the
        // object's audience (a SMART app names its FHIR server with
        // `resource` in a request object).
        if name == "resume" || name == "aud" || !AuthorizeParams::reads(name) {
            continue;
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(invalid_object(format!("{name} must be a string"))),
        };
        params.push((name.clone(), text));
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;
    const ISSUER: &str = "https://auth.example";

    fn claims() -> Value {
        json!({
            "iss": "app-1", "aud": ISSUER, "client_id": "app-1",
            "exp": NOW + 300, "iat": NOW, "nbf": NOW, "jti": "r-1",
            "response_type": "code", "redirect_uri": "https://app.example/cb",
            "scope": "openid", "state": "s", "max_age": 600,
            "claims": { "userinfo": {} },
        })
    }

    fn params(header: &Value, claims: &Value) -> Result<Vec<(String, String)>, OAuthError> {
        request_object_params(header, claims, "app-1", ISSUER, NOW)
    }

    #[test]
    fn a_request_object_gives_its_authorization_parameters() {
        let got = params(
            &json!({ "alg": "ES256", "typ": "oauth-authz-req+jwt" }),
            &claims(),
        )
        .unwrap();
        let find = |k: &str| got.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(find("response_type"), Some("code"));
        assert_eq!(find("max_age"), Some("600"));
        assert_eq!(find("client_id"), Some("app-1"));
        // Claims that are not parameters healthgate reads are not passed on.
        assert_eq!(find("jti"), None);
        assert_eq!(find("claims"), None);
        assert_eq!(find("iss"), None);
        assert_eq!(find("aud"), None, "the audience, not SMART's aud");
    }

    #[test]
    fn a_request_object_that_breaks_a_rule_is_refused_with_invalid_request_object() {
        let header = json!({ "alg": "ES256" });
        let with = |f: &dyn Fn(&mut Value)| {
            let mut c = claims();
            f(&mut c);
            c
        };
        let cases: Vec<(Value, Value, &str)> = vec![
            (json!({ "typ": "dpop+jwt" }), claims(), "typ"),
            (header.clone(), with(&|c| c["iss"] = "app-2".into()), "iss"),
            (
                header.clone(),
                with(&|c| c["client_id"] = "app-2".into()),
                "client_id",
            ),
            (
                header.clone(),
                with(&|c| c["aud"] = "https://other.example".into()),
                "aud",
            ),
            (
                header.clone(),
                with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
                "exp is required",
            ),
            (
                header.clone(),
                with(&|c| c["exp"] = (NOW - 1).into()),
                "expired",
            ),
            (
                header.clone(),
                with(&|c| c["nbf"] = (NOW + 600).into()),
                "nbf",
            ),
            (
                header.clone(),
                with(&|c| c["iat"] = (NOW + 600).into()),
                "iat",
            ),
            (
                header.clone(),
                with(&|c| c["exp"] = (NOW + 7200).into()),
                "an hour",
            ),
            (
                header.clone(),
                with(&|c| c["request_uri"] = "https://x.example/r".into()),
                "request_uri",
            ),
            (
                header.clone(),
                with(&|c| c["request"] = "a.b.c".into()),
                "request",
            ),
            (
                header.clone(),
                with(&|c| c["scope"] = json!(["openid"])),
                "scope must be a string",
            ),
        ];
        for (header, claims, says) in cases {
            let e = params(&header, &claims).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequestObject, "{says}");
            assert!(e.description.contains(says), "{says}: {}", e.description);
        }
        // aud may be an array naming the issuer.
        let listed = with(&|c| c["aud"] = json!(["https://x.example", ISSUER]));
        params(&header, &listed).unwrap();
    }

    #[test]
    fn request_uris_are_urns_and_resume_tokens_belong_to_one_request() {
        let a = new_request_uri();
        assert!(is_pushed(&a.value) && a.value.len() > REQUEST_URI_PREFIX.len() + 40);
        assert_eq!(a.digest, secret::digest(&a.value));
        assert!(!is_pushed("https://client.example/request.jwt"));
        let key = [7u8; 32];
        let token = resume_token(&key, &a.digest);
        assert!(resume_holds(&key, &a.digest, &token));
        assert!(!resume_holds(&key, &new_request_uri().digest, &token));
        assert!(!resume_holds(&[8u8; 32], &a.digest, &token));
    }

    #[test]
    fn a_push_carries_no_credentials_and_no_request_uri() {
        let pairs = [
            ("response_type", "code"),
            ("client_id", "app-1"),
            ("client_secret", "s"),
            ("client_assertion_type", "t"),
            ("client_assertion", "a.b.c"),
        ];
        assert_eq!(
            pushed_pairs(pairs).unwrap(),
            vec![("response_type", "code"), ("client_id", "app-1")]
        );
        let e = pushed_pairs([("request_uri", "urn:x")]).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
    }
}
