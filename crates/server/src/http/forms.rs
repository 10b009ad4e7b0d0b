//! What the pages' forms share: a submitted form read the same way whether
//! it came URL-encoded or as `multipart/form-data` (a file upload), and the
//! validation messages a page shows next to the fields they concern.

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{HeaderMap, header};

use crate::http::error::PageError;
use crate::state::AppState;

/// A file sent with a form.
pub struct Upload {
    pub bytes: Vec<u8>,
}

/// A submitted form: its fields in order (a name may repeat, as checkboxes
/// do) and its files.
#[derive(Default)]
pub struct Form {
    fields: Vec<(String, String)>,
    files: Vec<(String, Upload)>,
}

impl Form {
    /// Reads the request body as a form. A file larger than `max_file`
    /// bytes is refused with a page that says so.
    pub async fn read(
        state: &AppState,
        request: Request,
        max_file: usize,
    ) -> Result<(HeaderMap, Self), PageError> {
        let headers = request.headers().clone();
        let multipart = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("multipart/form-data"));
        if !multipart {
            let body = axum::body::to_bytes(request.into_body(), 1 << 20)
                .await
                .map_err(|_| PageError::bad_request("The form was too large."))?;
            let fields = url::form_urlencoded::parse(&body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            return Ok((
                headers,
                Self {
                    fields,
                    files: Vec::new(),
                },
            ));
        }
        let mut parts = Multipart::from_request(request, state)
            .await
            .map_err(|_| PageError::bad_request("The form could not be read."))?;
        let mut form = Self::default();
        let unreadable = |_| PageError::bad_request("The form could not be read.");
        while let Some(field) = parts.next_field().await.map_err(unreadable)? {
            let name = field.name().unwrap_or_default().to_owned();
            if field.file_name().is_some() {
                let bytes = field.bytes().await.map_err(unreadable)?;
                if bytes.len() > max_file {
                    return Err(PageError::bad_request(format!(
                        "The file is too large: at most {} KB.",
                        max_file / 1024
                    )));
                }
                if !bytes.is_empty() {
                    form.files.push((
                        name,
                        Upload {
                            bytes: bytes.to_vec(),
                        },
                    ));
                }
            } else {
                let text = field.text().await.map_err(unreadable)?;
                form.fields.push((name, text));
            }
        }
        Ok((headers, form))
    }

    /// Every field as sent, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The first value of a field, trimmed; empty is absent.
    pub fn text(&self, name: &str) -> Option<String> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// The first value of a field exactly as typed, for a password (whose
    /// spaces, leading and trailing too, are part of it); blank is absent,
    /// as in the forms `CsrfForm` reads.
    pub fn as_typed(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.trim().is_empty())
    }

    /// Every value of a field (checkboxes), in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Whether a checkbox was ticked.
    pub fn checked(&self, name: &str) -> bool {
        self.fields.iter().any(|(k, _)| k == name)
    }

    /// The file sent in a field, if one was chosen.
    pub fn file(&self, name: &str) -> Option<&Upload> {
        self.files.iter().find(|(k, _)| k == name).map(|(_, f)| f)
    }
}

/// Validation messages by field name, shown next to their fields: every
/// mistake of a submit at once, several of one field side by side.
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<(&'static str, String)>);

impl FieldErrors {
    /// Notes a message for `field`, after any it already has.
    pub fn add(&mut self, field: &'static str, message: impl Into<String>) {
        let message = message.into();
        match self.0.iter_mut().find(|(f, _)| *f == field) {
            Some((_, shown)) => {
                shown.push(' ');
                shown.push_str(&message);
            }
            None => self.0.push((field, message)),
        }
    }

    /// The message for a field, if it has one.
    pub fn of(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, m)| m.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
