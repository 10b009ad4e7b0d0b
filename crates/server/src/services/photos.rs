//! App photos: what a photo may be (a PNG, JPEG, GIF or WebP image of at
//! most 256 KB, recognised by its bytes), fetching one given as a URL once,
//! when it is registered or changed, and where pages find it. Pages show
//! only photos healthgate serves itself (`/apps/{id}/photo`), so opening a
//! consent page tells no partner who opened it and loads nothing from a
//! third party (RFC 9700 §4.2.4).

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, USER_AGENT};

/// The largest app photo accepted, bytes (uploaded or fetched).
pub const MAX_PHOTO: usize = 256 * 1024;
/// How long a photo's server gets to answer, body included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The `User-Agent` of a photo fetch.
const USER_AGENT_VALUE: &str = "healthgate-photos";

/// The image types an app photo may be, recognised by their first bytes
/// (never by the name, the `Content-Type` or the type the browser claims).
/// SVG is not among them: it can carry script.
pub fn image_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(b"\xff\xd8\xff") {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() > 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// A photo ready to be stored: its recognised type and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Photo {
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
}

impl Photo {
    /// The photo in `bytes`, if they are one of the accepted image types.
    pub fn recognise(bytes: Vec<u8>) -> Option<Self> {
        image_type(&bytes).map(|content_type| Self {
            content_type,
            bytes,
        })
    }
}

/// Where healthgate serves the photo stored for `client_id`; `version`
/// changes with the photo, so browsers do not keep showing an old one.
pub fn served_url(issuer: &str, client_id: &str, version: i64) -> String {
    format!("{issuer}/apps/{client_id}/photo?v={version}")
}

/// The path on this server pages show app `client_id`'s photo from, if
/// `photo_url` is healthgate's own address of it; `None` when the app has no
/// photo, or only an address elsewhere (kept from before photos were
/// fetched), which no page shows.
pub fn served_path(client_id: &str, photo_url: Option<&str>) -> Option<String> {
    let url = url::Url::parse(photo_url?).ok()?;
    let path = format!("/apps/{client_id}/photo");
    (url.path() == path).then(|| match url.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    })
}

/// Why a photo URL gave no photo; said to the developer who gave it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("the photo could not be fetched ({0})")]
    Transport(String),
    #[error(
        "the address answered with a redirect (HTTP {0}), which is not followed; give the image's own address"
    )]
    Redirect(u16),
    #[error("the address answered HTTP {0}, not the image")]
    Status(u16),
    #[error("the photo is larger than 256 KB")]
    TooLarge,
    #[error("the address did not give a PNG, JPEG, GIF or WebP image (SVG is not accepted)")]
    NotAnImage,
}

/// Fetches the photo at `url` with `http`, the webhook delivery client
/// ([`crate::services::outbound::http_client`]): it resolves names only to public
/// addresses and follows no redirect. The body is read up to
/// [`MAX_PHOTO`] bytes and no further; whatever it is, its bytes must be an
/// accepted image. The caller has checked the URL's scheme and any literal
/// address.
pub async fn fetch(http: &reqwest::Client, url: &str) -> Result<Photo, FetchError> {
    let transport =
        |e: reqwest::Error| FetchError::Transport(crate::services::outbound::describe(&e));
    let mut response = http
        .get(url)
        .timeout(FETCH_TIMEOUT)
        .header(USER_AGENT, USER_AGENT_VALUE)
        .header(ACCEPT, "image/png, image/jpeg, image/gif, image/webp")
        .send()
        .await
        .map_err(transport)?;
    let status = response.status();
    if status.is_redirection() {
        return Err(FetchError::Redirect(status.as_u16()));
    }
    if status != StatusCode::OK {
        return Err(FetchError::Status(status.as_u16()));
    }
    let announced = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_PHOTO as u64) {
        return Err(FetchError::TooLarge);
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if bytes.len() + chunk.len() > MAX_PHOTO {
            return Err(FetchError::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Photo::recognise(bytes).ok_or(FetchError::NotAnImage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photos_are_recognised_by_their_bytes() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", Some("image/png")),
            (b"\xff\xd8\xff\xe0\0\x10JFIF", Some("image/jpeg")),
            (b"GIF89a\x01\0\x01\0", Some("image/gif")),
            (b"RIFF\x24\0\0\0WEBPVP8 ", Some("image/webp")),
            (b"RIFF\x24\0\0\0WAVEfmt ", None),
            (b"<svg xmlns=\"http://www.w3.org/2000/svg\">", None),
            (b"<?xml version=\"1.0\"?><svg>", None),
            (b"<html><script>", None),
            (b"", None),
        ];
        for (bytes, expected) in cases {
            assert_eq!(image_type(bytes), *expected, "{bytes:?}");
        }
    }

    #[test]
    fn pages_show_only_photos_served_here() {
        let cases: &[(Option<&str>, Option<&str>)] = &[
            (None, None),
            (
                Some("https://auth.example/apps/app-1/photo?v=17"),
                Some("/apps/app-1/photo?v=17"),
            ),
            (
                Some("http://127.0.0.1:8080/apps/app-1/photo"),
                Some("/apps/app-1/photo"),
            ),
            // Another app's photo, a partner's address, nonsense.
            (Some("https://auth.example/apps/app-2/photo?v=1"), None),
            (Some("https://partner.example/logo.png"), None),
            (Some("https://partner.example/apps/app-1/photo/x"), None),
            (Some("/apps/app-1/photo"), None),
            (Some("javascript:alert(1)"), None),
        ];
        for (stored, shown) in cases {
            assert_eq!(
                served_path("app-1", *stored).as_deref(),
                *shown,
                "{stored:?}"
            );
        }
        assert_eq!(
            served_path(
                "app-1",
                Some(&served_url("https://auth.example", "app-1", 5))
            )
            .as_deref(),
            Some("/apps/app-1/photo?v=5")
        );
    }
}
