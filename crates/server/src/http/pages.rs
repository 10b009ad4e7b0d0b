//! The pages people see, rendered from compile-time askama templates (which
//! escape every value), and the one stylesheet they share.

use std::fmt::Write as _;

use askama::Template;

use crate::config::{Branding, Settings};
use crate::state::AppState;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

pub const STYLESHEET: &str = include_str!("../../static/healthgate.css");

/// Renders a template with `status`; a template error (which the compiler
/// makes nearly impossible) becomes a plain 500 and a log line.
pub fn render(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => {
            let mut r = (status, Html(html)).into_response();
            // Pages carry CSRF tokens and personal data: never cache them.
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// What every page shows around its content: the deployment's name and its
/// branding (logo, accent colour, support link).
pub struct Site<'a> {
    pub platform: &'a str,
    pub brand: &'a Branding,
    /// Who is signed in, for the header; `None` for a visitor, and on pages
    /// that do not say (error pages, the consent page).
    pub person: Option<&'a Person>,
    /// A page in the middle of an app's authorization (consent, refusal):
    /// the header carries no links, so the person's one choice is the
    /// page's, and a signed-in person is not offered "Sign in".
    pub focused: bool,
}

/// The signed-in person as the header shows them.
#[derive(Debug, Clone)]
pub struct Person {
    pub name: String,
    /// For the header's Sign out form.
    pub csrf_token: String,
    /// Sees the Admin link.
    pub operator: bool,
    /// Administers a practice: sees the Integrations link.
    pub practice_admin: bool,
    /// Signed in with a temporary password: no links until they chose
    /// their own (every page would send them back to choosing it).
    pub choosing_password: bool,
}

impl<'a> Site<'a> {
    pub fn of(settings: &'a Settings) -> Self {
        Self {
            platform: &settings.platform_name,
            brand: &settings.branding,
            person: None,
            focused: false,
        }
    }

    /// The frame of a page in the middle of an authorization: no links.
    pub fn focused(settings: &'a Settings) -> Self {
        Self {
            focused: true,
            ..Self::of(settings)
        }
    }

    /// The same frame, its header naming `person`.
    pub fn seen_by(self, person: Option<&'a Person>) -> Self {
        Self { person, ..self }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub site: Site<'a>,
    pub status: u16,
    pub title: &'a str,
    pub message: &'a str,
    /// What to do now, worded for the status (`middleware::next_step`).
    pub next_step: &'a str,
    /// The id of the request, as in the access log and `X-Request-Id`.
    pub request_id: &'a str,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage<'a> {
    pub site: Site<'a>,
    pub app_name: Option<&'a str>,
    pub error: Option<&'a str>,
    pub csrf_token: &'a str,
    pub return_to: &'a str,
    pub username: &'a str,
    /// The right password for a locked account: say so, and whom to ask.
    pub locked: bool,
    /// Offer "Sign in with a passkey" (`passkey_sign_in`).
    pub passkey_sign_in: bool,
}

/// A scope as people read it: its name and the platform's words for it.
pub struct ScopeLine {
    pub name: String,
    pub description: String,
}

/// A scope in the words of the `[scopes]` vocabulary (one it does not
/// describe reads as its name).
pub fn describe_scope(settings: &Settings, name: &str) -> String {
    if let Some(words) = settings.scopes.get(name) {
        return words.clone();
    }
    match healthgate_core::smart::parse(name) {
        Ok(Some(scope)) if settings.smart.enabled() => {
            healthgate_core::smart::describe(&scope, true)
        }
        _ => name.to_owned(),
    }
}

/// `scopes` as people read them, in the order given.
pub fn scope_lines<'s>(
    settings: &Settings,
    scopes: impl IntoIterator<Item = &'s str>,
) -> Vec<ScopeLine> {
    scopes
        .into_iter()
        .map(|name| ScopeLine {
            name: name.to_owned(),
            description: describe_scope(settings, name),
        })
        .collect()
}

/// One organization (or "yourself") a consent can be for.
pub struct ChoiceLine {
    /// The `organization_id` the form sends; empty for "yourself".
    pub value: String,
    pub label: String,
    /// Requested scopes the person's role there does not allow, in words.
    pub refused: String,
}

#[derive(Template)]
#[template(path = "refused.html")]
pub struct RefusedPage<'a> {
    pub site: Site<'a>,
    pub app_name: &'a str,
    pub message: &'a str,
    pub back: &'a str,
}

#[derive(Template)]
#[template(path = "consent.html")]
pub struct ConsentPage<'a> {
    pub site: Site<'a>,
    pub app_name: &'a str,
    /// Where healthgate serves the app's photo (never a partner's address).
    pub app_photo: Option<String>,
    pub username: &'a str,
    pub scopes: Vec<ScopeLine>,
    pub choices: Vec<ChoiceLine>,
    /// SMART: the patients the person may pick for the app (one is shown,
    /// several are a choice).
    pub patients: Vec<PatientLine>,
    pub csrf_token: &'a str,
    pub request: Vec<(&'static str, &'a str)>,
    pub redirect_host: &'a str,
}

/// A patient the consent page offers: the `patient` the form sends, and
/// the name.
pub struct PatientLine {
    pub value: String,
    pub label: String,
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage<'a> {
    pub site: Site<'a>,
    pub username: Option<&'a str>,
    /// One of the platform's operators: the page links the admin console.
    pub operator: bool,
    pub csrf_token: &'a str,
}

#[derive(Template)]
#[template(path = "demo_callback.html")]
pub struct DemoCallbackPage<'a> {
    pub site: Site<'a>,
    pub code: Option<&'a str>,
    pub state: Option<&'a str>,
    pub error: Option<&'a str>,
    pub error_description: Option<&'a str>,
    pub iss: Option<&'a str>,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub token_endpoint: &'a str,
}

/// One app in the integration directory.
pub struct DirectoryApp {
    pub client_id: String,
    pub name: String,
    /// Where healthgate serves the app's photo.
    pub photo_url: Option<String>,
    pub description: Option<String>,
    /// `not-connected`, `pending` or `connected`.
    pub state: &'static str,
    pub state_label: &'static str,
    pub integration_id: Option<String>,
    /// In the directory; `false` for an app the practice is still connected
    /// to that left it (it can be disconnected, not connected anew).
    pub listed: bool,
    /// Suspended by the platform's operators.
    pub suspended: bool,
}

#[derive(Template)]
#[template(path = "integrations.html")]
pub struct IntegrationsPage<'a> {
    pub site: Site<'a>,
    pub org_id: &'a str,
    pub org_name: &'a str,
    pub orgs: Vec<(String, String)>,
    pub apps: Vec<DirectoryApp>,
    pub csrf_token: &'a str,
    /// What an action just did.
    pub notice: Option<String>,
}

#[derive(Template)]
#[template(path = "connect_code.html")]
pub struct ConnectCodePage<'a> {
    pub site: Site<'a>,
    pub app_name: &'a str,
    pub code: &'a str,
    pub lifetime: &'a str,
    pub exchange_url: &'a str,
    pub org_id: &'a str,
}

#[derive(Template)]
#[template(path = "demo_connect.html")]
pub struct DemoConnectPage<'a> {
    pub site: Site<'a>,
    pub code: Option<&'a str>,
    pub exchange_url: &'a str,
}

/// An instant shown to people, and the same instant for `<time datetime>`.
pub struct Stamp {
    pub text: String,
    pub iso: String,
}

impl Stamp {
    pub fn at(epoch_seconds: i64) -> Self {
        Self {
            text: format_utc(epoch_seconds),
            iso: format_iso(epoch_seconds),
        }
    }

    /// To the second, where what happened first matters: the operators'
    /// console, the audit log above all (`2026-11-22 13:45:07 UTC`).
    pub fn exact(epoch_seconds: i64) -> Self {
        let (y, m, d, hh, mm) = parts(epoch_seconds);
        let ss = epoch_seconds.rem_euclid(60);
        Self {
            text: format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC"),
            iso: format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z"),
        }
    }
}

/// The civil date (proleptic Gregorian) of a day counted from 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn parts(epoch_seconds: i64) -> (i64, u32, u32, i64, i64) {
    let days = epoch_seconds.div_euclid(86_400);
    let secs = epoch_seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    (y, m, d, secs / 3600, secs % 3600 / 60)
}

/// Text for a `<code>`: an id, a URL, a scope, an event kind. It may wrap
/// after a separator (`/`, `.`, `_`, `-`, `?`, `&`, `=`, `:`, `@`, `#`,
/// `,`), never inside a word: `{{ crate::http::pages::wrap(x) }}` in a
/// template. The text is HTML-escaped; the break opportunities are `<wbr>`
/// elements, which add nothing to what is copied or read aloud.
pub fn wrap(text: impl std::fmt::Display) -> Wrap {
    Wrap(text.to_string())
}

/// What [`wrap`] gives a template: safe HTML, so not escaped again.
pub struct Wrap(String);

impl askama::filters::HtmlSafe for Wrap {}

impl std::fmt::Display for Wrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut chars = self.0.chars().peekable();
        while let Some(c) = chars.next() {
            match escaped(c) {
                Some(entity) => f.write_str(entity)?,
                None => f.write_char(c)?,
            }
            // A break after a run of separators, before what follows it.
            if is_separator(c) && chars.peek().is_some_and(|next| !is_separator(*next)) {
                f.write_str("<wbr>")?;
            }
        }
        Ok(())
    }
}

/// The entity HTML needs for `c` in text or in an attribute, if any.
fn escaped(c: char) -> Option<&'static str> {
    match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        '"' => Some("&quot;"),
        '\'' => Some("&#x27;"),
        _ => None,
    }
}

/// `text` as HTML, for markup built outside a template.
pub fn escape(text: &str) -> String {
    let mut html = String::with_capacity(text.len());
    for c in text.chars() {
        match escaped(c) {
            Some(entity) => html.push_str(entity),
            None => html.push(c),
        }
    }
    html
}

fn is_separator(c: char) -> bool {
    matches!(
        c,
        '/' | '.' | '_' | '-' | '?' | '&' | '=' | ':' | '@' | '#' | ','
    )
}

/// An instant as people read it: `2026-11-22 13:45 UTC`.
pub fn format_utc(epoch_seconds: i64) -> String {
    let (y, m, d, hh, mm) = parts(epoch_seconds);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02} UTC")
}

/// An instant for `<time datetime>`: `2026-11-22T13:45Z`.
fn format_iso(epoch_seconds: i64) -> String {
    let (y, m, d, hh, mm) = parts(epoch_seconds);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}Z")
}

/// `GET /static/healthgate.css`: the one stylesheet.
pub async fn stylesheet() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        STYLESHEET,
    )
}

/// The branding's colour as a stylesheet (the CSP allows no inline styles).
pub async fn brand_stylesheet(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        // A `HexColor` prints as #rrggbb and nothing else.
        format!(
            ":root {{ --accent: {}; }}\n",
            state.settings.branding.accent_color
        ),
    )
}

/// `GET /static/healthgate.js`: the one script (copy buttons); pages work
/// without it.
pub async fn script() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        include_str!("../../static/healthgate.js"),
    )
}

/// `GET /static/passkeys.js`: the passkey buttons (WebAuthn), loaded only
/// by the pages that have one; without it those pages say passkeys need
/// JavaScript.
pub async fn passkeys_script() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        include_str!("../../static/passkeys.js"),
    )
}

/// `GET /static/favicon.svg` (and `/favicon.ico`, where browsers look).
pub async fn favicon() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("image/svg+xml"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            ),
        ],
        include_str!("../../static/favicon.svg"),
    )
}

#[cfg(test)]
mod tests {
    use super::{format_iso, format_utc, wrap};

    #[test]
    fn code_wraps_after_separators_and_is_escaped() {
        let cases = [
            (
                "https://sunrise.example/oauth/callback?x=1",
                "https://<wbr>sunrise.<wbr>example/<wbr>oauth/<wbr>callback?<wbr>x=<wbr>1",
            ),
            ("client.suspended", "client.<wbr>suspended"),
            ("hg_cs_AbC", "hg_<wbr>cs_<wbr>AbC"),
            ("profile_read openid", "profile_<wbr>read openid"),
            ("trailing/", "trailing/"),
            ("<b>&\"'", "&lt;b&gt;&amp;<wbr>&quot;&#x27;"),
            ("", ""),
        ];
        for (text, html) in cases {
            assert_eq!(wrap(text).to_string(), html, "{text}");
        }
    }

    #[test]
    fn instants_read_well() {
        let cases = [
            (0, "1970-01-01 00:00 UTC"),
            (59, "1970-01-01 00:00 UTC"),
            (951_782_400, "2000-02-29 00:00 UTC"),
            (1_795_355_100, "2026-11-22 13:45 UTC"),
            (1_709_251_199, "2024-02-29 23:59 UTC"),
            (4_102_444_800, "2100-01-01 00:00 UTC"),
            (-1, "1969-12-31 23:59 UTC"),
        ];
        for (at, text) in cases {
            assert_eq!(format_utc(at), text, "{at}");
        }
        assert_eq!(format_iso(1_795_355_100), "2026-11-22T13:45Z");
        let exact = super::Stamp::exact(1_795_355_107);
        assert_eq!(exact.text, "2026-11-22 13:45:07 UTC");
        assert_eq!(exact.iso, "2026-11-22T13:45:07Z");
        assert_eq!(super::Stamp::exact(-1).text, "1969-12-31 23:59:59 UTC");
    }
}
