//! Dynamic client registration (RFC 7591) and its management protocol
//! (RFC 7592): the client metadata a registration request carries, read
//! into what healthgate registers, with the RFC's errors. The rules every
//! registration meets (redirect URIs, scopes, keys) are the same ones the
//! command line and the portal apply; they are checked where those are.

use serde_json::{Map, Value};

use crate::error::{ErrorCode, OAuthError};

/// RFC 7591 §3.2.2's error codes.
pub fn invalid_metadata(why: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidClientMetadata, why.into())
}

pub fn invalid_redirect_uri(why: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidRedirectUri, why.into())
}

/// How the client authenticates at the token endpoint
/// (`token_endpoint_auth_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A secret, in HTTP Basic or in the body: healthgate takes both.
    ClientSecret,
    /// Its registered keys (`jwks` or `jwks_uri`).
    PrivateKeyJwt,
    /// A public client: none.
    None,
}

/// The grant types healthgate issues tokens for.
pub const GRANT_TYPES: &[&str] = &["authorization_code", "refresh_token", "client_credentials"];

/// The metadata of a registration request, read and checked for what the
/// RFC asks of it; everything it does not name is ignored (§2).
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    pub redirect_uris: Vec<String>,
    pub client_name: Option<String>,
    pub scope: Option<String>,
    pub auth_method: AuthMethod,
    pub grant_types: Vec<String>,
    pub jwks_uri: Option<String>,
    /// The JWK Set, as JSON text.
    pub jwks: Option<String>,
    pub id_token_signed_response_alg: Option<String>,
    /// RFC 9449 §5.2.
    pub dpop_bound_access_tokens: bool,
    /// RFC 9126 §6.
    pub require_pushed_authorization_requests: bool,
    /// RFC 7592 §2.2: a `PUT` names the client it replaces.
    pub client_id: Option<String>,
    /// RFC 7592 §2.2: a `PUT` may repeat the client's secret.
    pub client_secret: Option<String>,
}

fn string(object: &Map<String, Value>, name: &str) -> Result<Option<String>, OAuthError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid_metadata(format!("{name} must be a string"))),
    }
}

fn strings(object: &Map<String, Value>, name: &str) -> Result<Option<Vec<String>>, OAuthError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid_metadata(format!("{name} must be an array of strings")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(invalid_metadata(format!(
            "{name} must be an array of strings"
        ))),
    }
}

fn flag(object: &Map<String, Value>, name: &str) -> Result<bool, OAuthError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid_metadata(format!("{name} must be true or false"))),
    }
}

/// Reads a registration request's body (a JSON object, RFC 7591 §3.1).
/// A software statement is refused: healthgate trusts no statement
/// publisher, and would otherwise have to ignore what the client expects
/// to be registered (§3.1.1).
pub fn parse(body: &Value) -> Result<Metadata, OAuthError> {
    let Some(object) = body.as_object() else {
        return Err(invalid_metadata("the body must be a JSON object"));
    };
    if object.contains_key("software_statement") {
        return Err(OAuthError::new(
            ErrorCode::UnapprovedSoftwareStatement,
            "this server trusts no software statement publisher: send the metadata itself",
        ));
    }
    let auth_method = match string(object, "token_endpoint_auth_method")?.as_deref() {
        None | Some("client_secret_basic") | Some("client_secret_post") => AuthMethod::ClientSecret,
        Some("private_key_jwt") => AuthMethod::PrivateKeyJwt,
        Some("none") => AuthMethod::None,
        Some(other) => {
            return Err(invalid_metadata(format!(
                "token_endpoint_auth_method {other} is not supported: use client_secret_basic, client_secret_post, private_key_jwt or none"
            )));
        }
    };
    let grant_types =
        strings(object, "grant_types")?.unwrap_or_else(|| vec!["authorization_code".to_owned()]);
    if let Some(other) = grant_types
        .iter()
        .find(|g| !GRANT_TYPES.contains(&g.as_str()))
    {
        return Err(invalid_metadata(format!(
            "grant type {other} is not supported: use authorization_code, refresh_token or client_credentials"
        )));
    }
    if auth_method == AuthMethod::None && grant_types.iter().any(|g| g == "client_credentials") {
        return Err(invalid_metadata(
            "client_credentials needs a client that authenticates: not token_endpoint_auth_method none",
        ));
    }
    // RFC 7591 §2.1: grant types and response types agree; left out, the
    // response types are those the grant types need.
    let code_flow = grant_types.iter().any(|g| g == "authorization_code");
    let response_types = strings(object, "response_types")?.unwrap_or_else(|| {
        if code_flow {
            vec!["code".to_owned()]
        } else {
            Vec::new()
        }
    });
    if let Some(other) = response_types.iter().find(|r| *r != "code") {
        return Err(invalid_metadata(format!(
            "response type {other} is not supported: only code"
        )));
    }
    let code_response = !response_types.is_empty();
    if code_flow != code_response {
        return Err(invalid_metadata(
            "grant_types and response_types disagree: authorization_code goes with response_types [\"code\"]",
        ));
    }
    let redirect_uris = strings(object, "redirect_uris")?.unwrap_or_default();
    if code_flow && redirect_uris.is_empty() {
        return Err(invalid_redirect_uri(
            "redirect_uris is required for the authorization_code grant",
        ));
    }
    let jwks = match object.get("jwks") {
        None | Some(Value::Null) => None,
        Some(set @ Value::Object(_)) => Some(set.to_string()),
        Some(_) => return Err(invalid_metadata("jwks must be a JWK Set (a JSON object)")),
    };
    let jwks_uri = string(object, "jwks_uri")?;
    let keyed = jwks.is_some() || jwks_uri.is_some();
    match auth_method {
        AuthMethod::PrivateKeyJwt if !keyed => {
            return Err(invalid_metadata(
                "private_key_jwt needs the client's keys: jwks or jwks_uri",
            ));
        }
        AuthMethod::ClientSecret | AuthMethod::None if keyed => {
            return Err(invalid_metadata(
                "jwks and jwks_uri are the keys of a private_key_jwt client: set token_endpoint_auth_method to private_key_jwt",
            ));
        }
        _ => {}
    }
    Ok(Metadata {
        redirect_uris,
        client_name: string(object, "client_name")?,
        scope: string(object, "scope")?,
        auth_method,
        grant_types,
        jwks_uri,
        jwks,
        id_token_signed_response_alg: string(object, "id_token_signed_response_alg")?,
        dpop_bound_access_tokens: flag(object, "dpop_bound_access_tokens")?,
        require_pushed_authorization_requests: flag(
            object,
            "require_pushed_authorization_requests",
        )?,
        client_id: string(object, "client_id")?,
        client_secret: string(object, "client_secret")?,
    })
}

/// The grant types a registered client may use, as its metadata says them
/// back: a public client has no client credentials.
pub fn grant_types_of(public: bool) -> Vec<&'static str> {
    if public {
        vec!["authorization_code", "refresh_token"]
    } else {
        GRANT_TYPES.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(body: Value) -> OAuthError {
        parse(&body).unwrap_err()
    }

    #[test]
    fn a_minimal_request_registers_a_confidential_code_flow_client() {
        let m = parse(&json!({ "redirect_uris": ["https://app.example/cb"], "scope": "openid" }))
            .unwrap();
        assert_eq!(m.auth_method, AuthMethod::ClientSecret);
        assert_eq!(m.grant_types, vec!["authorization_code"]);
        assert_eq!(m.redirect_uris, vec!["https://app.example/cb"]);
        assert!(!m.dpop_bound_access_tokens && !m.require_pushed_authorization_requests);
        // Unknown metadata is ignored (RFC 7591 §2).
        let m = parse(&json!({
            "redirect_uris": ["https://app.example/cb"], "tos_uri": "https://app.example/tos",
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": { "keys": [] }, "dpop_bound_access_tokens": true,
            "require_pushed_authorization_requests": true,
        }))
        .unwrap();
        assert_eq!(m.auth_method, AuthMethod::PrivateKeyJwt);
        assert!(m.dpop_bound_access_tokens && m.require_pushed_authorization_requests);
        assert_eq!(m.jwks.as_deref(), Some(r#"{"keys":[]}"#));
        // A backend service: client credentials only, no redirect URI.
        let m = parse(&json!({
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://svc.example/jwks",
        }))
        .unwrap();
        assert!(m.redirect_uris.is_empty());
    }

    #[test]
    fn metadata_the_rfc_or_healthgate_cannot_take_is_refused_with_its_error() {
        let uris = json!(["https://app.example/cb"]);
        let cases = [
            (json!([1]), ErrorCode::InvalidClientMetadata),
            (json!({ "scope": "openid" }), ErrorCode::InvalidRedirectUri),
            (
                json!({ "redirect_uris": "https://app.example/cb" }),
                ErrorCode::InvalidClientMetadata,
            ),
            (
                json!({ "redirect_uris": uris, "grant_types": ["implicit"] }),
                ErrorCode::InvalidClientMetadata,
            ),
            (
                json!({ "redirect_uris": uris, "grant_types": ["password"] }),
                ErrorCode::InvalidClientMetadata,
            ),
            (
                json!({ "redirect_uris": uris, "response_types": ["token"] }),
                ErrorCode::InvalidClientMetadata,
            ),
            (
                json!({ "redirect_uris": uris, "grant_types": ["client_credentials"], "response_types": ["code"] }),
                ErrorCode::InvalidClientMetadata,
            ),
            (
                json!({ "redirect_uris": uris, "token_endpoint_auth_method": "client_secret_jwt" }),
                ErrorCode::InvalidClientMetadata,
            ),
            (
                json!({ "redirect_uris": uris, "token_endpoint_auth_method": "private_key_jwt" }),
                ErrorCode::InvalidClientMetadata,
            ),
            (
                json!({ "redirect_uris": uris, "jwks_uri": "https://app.example/jwks" }),
                ErrorCode::InvalidClientMetadata,
            ),
            (
                json!({ "grant_types": ["client_credentials"], "response_types": [], "token_endpoint_auth_method": "none" }),
                ErrorCode::InvalidClientMetadata,
            ),
            (
                json!({ "redirect_uris": uris, "dpop_bound_access_tokens": "yes" }),
                ErrorCode::InvalidClientMetadata,
            ),
            (
                json!({ "redirect_uris": uris, "jwks": "keys" }),
                ErrorCode::InvalidClientMetadata,
            ),
            (
                json!({ "redirect_uris": uris, "software_statement": "a.b.c" }),
                ErrorCode::UnapprovedSoftwareStatement,
            ),
        ];
        for (body, code) in cases {
            assert_eq!(refused(body.clone()).code, code, "{body}");
        }
    }
}
