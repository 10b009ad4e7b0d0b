//! Request parameters from a form-encoded or JSON body (HealthTap sends JSON
//! to the token endpoint), with RFC 6749 §3.2's rule that no parameter may
//! appear twice.

use std::collections::HashMap;

use axum::http::{HeaderMap, header};
use healthgate_core::error::OAuthError;

/// Decoded name/value parameters, each present at most once.
#[derive(Debug, Default, Clone)]
pub struct Params(HashMap<String, String>);

impl Params {
    /// Builds from pairs, refusing repeats. Empty values count as absent
    /// (RFC 6749 §3.1: "Parameters sent without a value MUST be treated as if
    /// they were omitted").
    pub fn from_pairs<I>(pairs: I) -> Result<Self, OAuthError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut map = HashMap::new();
        for (k, v) in pairs {
            if v.is_empty() {
                continue;
            }
            if map.insert(k.clone(), v).is_some() {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {k} is repeated"
                )));
            }
        }
        Ok(Self(map))
    }

    /// Parses a request body by its `Content-Type`.
    pub fn from_body(headers: &HeaderMap, body: &[u8]) -> Result<Self, OAuthError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match content_type.as_str() {
            "application/x-www-form-urlencoded" => Self::from_form(body),
            "application/json" => Self::from_json(body),
            "" if body.is_empty() => Ok(Self::default()),
            _ => Err(OAuthError::invalid_request(
                "send parameters as application/x-www-form-urlencoded or application/json",
            )),
        }
    }

    pub fn from_form(body: &[u8]) -> Result<Self, OAuthError> {
        Self::from_pairs(
            url::form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())),
        )
    }

    /// A flat JSON object; strings, numbers and booleans are taken as their
    /// text, nulls as absent.
    pub fn from_json(body: &[u8]) -> Result<Self, OAuthError> {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|_| OAuthError::invalid_request("the JSON body could not be parsed"))?;
        let serde_json::Value::Object(object) = value else {
            return Err(OAuthError::invalid_request(
                "the JSON body must be an object",
            ));
        };
        let mut pairs = Vec::with_capacity(object.len());
        for (k, v) in object {
            let text = match v {
                serde_json::Value::Null => continue,
                serde_json::Value::String(s) => s,
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => {
                    return Err(OAuthError::invalid_request(format!(
                        "parameter {k} must be a string"
                    )));
                }
            };
            pairs.push((k, text));
        }
        Self::from_pairs(pairs)
    }

    /// These parameters and `other`'s together; a parameter in both is a
    /// repeat (RFC 6749 §3.2) and refused.
    pub fn merged_with(mut self, other: Params) -> Result<Self, OAuthError> {
        for (k, v) in other.0 {
            if self.0.contains_key(&k) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {k} is repeated"
                )));
            }
            self.0.insert(k, v);
        }
        Ok(self)
    }

    /// Every parameter, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// With `name` set to `value` (a parameter the request did not send).
    pub fn with(mut self, name: &str, value: String) -> Self {
        self.0.insert(name.to_owned(), value);
        self
    }

    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("parameter {name} is required")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(ct: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        h
    }

    #[test]
    fn form_and_json_give_the_same_params() {
        let form = Params::from_body(
            &headers("application/x-www-form-urlencoded"),
            b"grant_type=authorization_code&code=abc&redirect_uri=https%3A%2F%2Fa.example%2Fcb",
        )
        .unwrap();
        let json = Params::from_body(
            &headers("application/json; charset=utf-8"),
            br#"{"grant_type":"authorization_code","code":"abc","redirect_uri":"https://a.example/cb"}"#,
        )
        .unwrap();
        for k in ["grant_type", "code", "redirect_uri"] {
            assert_eq!(form.get(k), json.get(k));
        }
    }

    #[test]
    fn repeats_and_bad_bodies_are_refused() {
        assert!(Params::from_form(b"code=a&code=b").is_err());
        assert!(Params::from_json(b"[1]").is_err());
        assert!(Params::from_json(br#"{"code":{"x":1}}"#).is_err());
        assert!(Params::from_body(&headers("text/plain"), b"x").is_err());
        assert_eq!(
            Params::from_form(b"scope=&code=a").unwrap().get("scope"),
            None
        );
    }
}
