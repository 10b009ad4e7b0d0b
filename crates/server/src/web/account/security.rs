//! `/account/security`: a person's second factors. They set up an
//! authenticator app (the secret as text and as a QR code drawn here, no
//! outside service; a first code from the app confirms it), get ten
//! recovery codes with their first factor (shown once, kept as digests),
//! can get a fresh set, and remove a factor; removing one or replacing the
//! codes asks for the password again (a guess there counts like a sign-in's).
//! Passkeys are set up on the same page (`web::passkeys`, whose button
//! needs JavaScript; everything else here works without).
//!
//! A person who must have a second factor and has none is sent here before
//! anything else (`http::extract::Enrolling`), and goes on to where they
//! were going once one is set up (`return_to`). While they must, the last
//! factor cannot be removed.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use healthgate_core::mfa::{FactorKind, Method, MfaRequirement, TotpSecret};
use healthgate_core::redirect::with_query_params;
use healthgate_store::Factor;
use serde::Deserialize;

use super::Nav;
use crate::http::error::PageError;
use crate::http::extract::{CsrfForm, Enrolling, SECURITY_PAGE, Viewer};
use crate::http::forms::FieldErrors;
use crate::http::ip::ClientIp;
use crate::http::pages::{self, Site, Stamp};
use crate::services::mfa::{self, Confirmed, MfaError};
use crate::state::AppState;
use crate::web::login::safe_return_to;

/// The longest name a factor may be given.
const MAX_LABEL: usize = 60;

impl From<MfaError> for PageError {
    fn from(e: MfaError) -> Self {
        match e {
            MfaError::Store(e) => e.into(),
            MfaError::Interrupted(why) => {
                tracing::error!(error = %why, "a second factor check did not finish");
                PageError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    title: "Temporarily unavailable",
                    message: "The service could not check your code. Please try again in a moment."
                        .into(),
                }
            }
            MfaError::Sealed(why) => {
                tracing::error!(error = %why, "a second factor could not be read");
                PageError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    title: "Your second factor could not be read",
                    message: "Something is wrong with how this server keeps second factors. Ask an administrator of this platform to look at its log.".into(),
                }
            }
        }
    }
}

/// One factor as the page lists it.
pub struct FactorLine {
    pub id: String,
    pub kind: &'static str,
    pub label: String,
    pub added: Stamp,
    pub last_used: Option<Stamp>,
}

impl FactorLine {
    fn of(f: &Factor) -> Self {
        Self {
            id: f.id.clone(),
            kind: match f.kind {
                FactorKind::Totp => "Authenticator app",
                FactorKind::Passkey => "Passkey",
            },
            label: f.label.clone(),
            added: Stamp::at(f.confirmed_at.unwrap_or(f.created_at)),
            last_used: f.last_used_at.map(Stamp::at),
        }
    }
}

#[derive(Template)]
#[template(path = "account_security.html")]
pub struct SecurityPage<'a> {
    pub site: Site<'a>,
    pub nav: Nav,
    /// Why the person must have a second factor, in words, if they must.
    pub required: Option<String>,
    /// They must and have none: set one up before anything else.
    pub must_enrol: bool,
    pub factors: Vec<FactorLine>,
    pub codes_left: i64,
    pub has_password: bool,
    pub notice: Option<&'static str>,
    pub errors: FieldErrors,
    pub return_to: &'a str,
    pub csrf_token: &'a str,
}

#[derive(Template)]
#[template(path = "account_security_totp.html")]
pub struct TotpPage<'a> {
    pub site: Site<'a>,
    pub factor_id: &'a str,
    pub label: &'a str,
    /// The secret in groups of four, for typing into the app.
    pub secret: String,
    /// The `otpauth://` URI, as a link (a phone opens its authenticator
    /// app with it) and as a QR code (SVG, drawn here).
    pub otpauth_uri: String,
    pub qr_svg: String,
    pub errors: FieldErrors,
    pub return_to: &'a str,
    pub csrf_token: &'a str,
}

#[derive(Template)]
#[template(path = "account_security_codes.html")]
pub struct CodesPage<'a> {
    pub site: Site<'a>,
    pub codes: Vec<String>,
    /// Whether these came with a new factor (rather than replacing a set).
    pub first: bool,
    pub continue_to: &'a str,
}

#[derive(Deserialize)]
pub struct SecurityQuery {
    done: Option<String>,
    return_to: Option<String>,
}

/// Every field the security forms send.
#[derive(Debug, Default, Deserialize)]
pub struct SecurityForm {
    pub label: Option<String>,
    pub factor_id: Option<String>,
    pub code: Option<String>,
    pub current_password: Option<String>,
    pub return_to: Option<String>,
}

fn notice(done: Option<&str>) -> Option<&'static str> {
    match done? {
        "totp" => Some("Your authenticator app is set up: sign-ins now ask for a code from it."),
        "passkey" => Some("Your passkey is set up."),
        "removed" => Some("That second factor was removed."),
        _ => None,
    }
}

fn required_in_words(r: &MfaRequirement) -> String {
    match r {
        MfaRequirement::Everyone => {
            "This platform requires a second factor for every account.".into()
        }
        MfaRequirement::Operator => {
            "This platform requires a second factor for its operators.".into()
        }
        MfaRequirement::Role(role) => format!(
            "This platform requires a second factor for everyone with the {role} role in an organization."
        ),
    }
}

/// Where to go once the page is done with: where the person was going when
/// they were sent here, or this page.
pub(crate) fn onwards(return_to: Option<&str>) -> &str {
    match return_to {
        Some(_) => safe_return_to(return_to),
        None => SECURITY_PAGE,
    }
}

/// A QR code of `text` as an SVG image (black on white, a quiet zone
/// around it, as scanners want whatever the page's colours).
pub fn qr_svg(text: &str) -> String {
    match qrcode::QrCode::new(text.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color>()
            .min_dimensions(200, 200)
            .dark_color(qrcode::render::svg::Color("#000000"))
            .light_color(qrcode::render::svg::Color("#ffffff"))
            .quiet_zone(true)
            .build(),
        Err(_) => String::new(),
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn render_page(
    state: &AppState,
    viewer: &Viewer,
    status: StatusCode,
    enrolling: &Enrolling,
    return_to: &str,
    notice: Option<&'static str>,
    errors: FieldErrors,
) -> Result<Response, PageError> {
    let user = &enrolling.person.user;
    let factors: Vec<FactorLine> = state
        .store
        .factors_of_user(&user.id)
        .await?
        .iter()
        .filter(|f| f.confirmed_at.is_some())
        .map(FactorLine::of)
        .collect();
    let codes_left = if factors.is_empty() {
        0
    } else {
        state.store.recovery_codes_left(&user.id).await?
    };
    let required = mfa::requirement(state, user).await?;
    Ok(pages::render(
        status,
        &SecurityPage {
            site: viewer.site(&state.settings),
            nav: Nav::on(SECURITY_PAGE),
            required: required.as_ref().map(required_in_words),
            must_enrol: enrolling.must,
            factors,
            codes_left,
            has_password: user.password_hash.is_some(),
            notice,
            errors,
            return_to,
            csrf_token: &enrolling.person.session.csrf_token,
        },
    ))
}

/// `GET /account/security`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    enrolling: Enrolling,
    Query(q): Query<SecurityQuery>,
) -> Result<Response, PageError> {
    let return_to = q.return_to.as_deref().map(|r| safe_return_to(Some(r)));
    render_page(
        &state,
        &viewer,
        StatusCode::OK,
        &enrolling,
        return_to.unwrap_or(""),
        notice(q.done.as_deref()),
        FieldErrors::default(),
    )
    .await
}

#[allow(clippy::too_many_arguments)]
fn render_totp(
    state: &AppState,
    viewer: &Viewer,
    status: StatusCode,
    enrolling: &Enrolling,
    factor_id: &str,
    label: &str,
    secret: &TotpSecret,
    return_to: &str,
    errors: FieldErrors,
) -> Response {
    let user = &enrolling.person.user;
    let account = user.email.as_deref().unwrap_or(&user.username);
    let uri = secret.otpauth_uri(&state.settings.platform_name, account);
    pages::render(
        status,
        &TotpPage {
            site: viewer.site(&state.settings),
            factor_id,
            label,
            secret: secret.base32_grouped(),
            qr_svg: qr_svg(&uri),
            otpauth_uri: uri,
            errors,
            return_to,
            csrf_token: &enrolling.person.session.csrf_token,
        },
    )
}

/// A factor's name as typed, or what it is called when none was given.
pub(crate) fn label_of(typed: Option<&str>, default: &str) -> Result<String, &'static str> {
    let label = typed
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .unwrap_or(default);
    if label.chars().count() > MAX_LABEL {
        return Err("Give it a shorter name: at most 60 characters.");
    }
    if label.chars().any(char::is_control) {
        return Err("The name cannot hold control characters.");
    }
    Ok(label.to_owned())
}

/// `POST /account/security/totp` (`label`): starts setting up an
/// authenticator app and shows its secret and QR code.
pub async fn begin_totp(
    State(state): State<AppState>,
    viewer: Viewer,
    enrolling: Enrolling,
    CsrfForm { fields: f, .. }: CsrfForm<SecurityForm>,
) -> Result<Response, PageError> {
    let return_to = f
        .return_to
        .as_deref()
        .map(|r| safe_return_to(Some(r)))
        .unwrap_or("");
    let label = match label_of(f.label.as_deref(), "Authenticator app") {
        Ok(l) => l,
        Err(e) => {
            let mut errors = FieldErrors::default();
            errors.add("label", e);
            return render_page(
                &state,
                &viewer,
                StatusCode::BAD_REQUEST,
                &enrolling,
                return_to,
                None,
                errors,
            )
            .await;
        }
    };
    let started = mfa::begin_totp(&state, &enrolling.person.user, &label).await?;
    Ok(render_totp(
        &state,
        &viewer,
        StatusCode::OK,
        &enrolling,
        &started.factor_id,
        &label,
        &started.secret,
        return_to,
        FieldErrors::default(),
    ))
}

/// `POST /account/security/totp/confirm` (`factor_id`, `code`): a first
/// code from the app confirms it. The first factor comes with recovery
/// codes, shown once.
pub async fn confirm_totp(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    enrolling: Enrolling,
    CsrfForm { fields: f, .. }: CsrfForm<SecurityForm>,
) -> Result<Response, PageError> {
    let user = &enrolling.person.user;
    let return_to_field = f.return_to.as_deref().map(|r| safe_return_to(Some(r)));
    let return_to = return_to_field.unwrap_or("");
    let factor_id = f.factor_id.unwrap_or_default();
    let Some((factor, secret)) = mfa::pending_totp(&state, user, &factor_id).await? else {
        return Err(PageError::bad_request(
            "That set-up has ended (it was finished or started again). Start again from your security page.",
        ));
    };
    let code = f.code.unwrap_or_default();
    let actor = enrolling.person.actor(&ip);
    match mfa::confirm_totp(&state, user, (&factor, &secret), &code, actor).await? {
        Confirmed::Yes(codes) => {
            // The person just proved they hold the factor: this sign-in
            // counts as one with a second factor from now (an app waiting
            // for one goes on without asking again).
            let session = &enrolling.person.session;
            state
                .store
                .step_up_session(
                    &session.id_digest,
                    &session.amr.with(Method::Otp),
                    state.now(),
                )
                .await?;
            Ok(match codes {
                Some(codes) => pages::render(
                    StatusCode::OK,
                    &CodesPage {
                        site: viewer.site(&state.settings),
                        codes,
                        first: true,
                        continue_to: onwards(return_to_field),
                    },
                ),
                None => Redirect::to(&done_url("totp", return_to_field)).into_response(),
            })
        }
        Confirmed::No => {
            let mut errors = FieldErrors::default();
            errors.add(
                "code",
                if code.trim().is_empty() {
                    "Enter the 6-digit code your app shows for this account."
                } else {
                    "That code is not the one the app shows now. Check the app's clock is right, then type the code it shows."
                },
            );
            Ok(render_totp(
                &state,
                &viewer,
                StatusCode::BAD_REQUEST,
                &enrolling,
                &factor.id,
                &factor.label,
                &secret,
                return_to,
                errors,
            ))
        }
    }
}

/// This page with a notice, on the way back to `return_to` when the person
/// was sent here.
pub(crate) fn done_url(done: &str, return_to: Option<&str>) -> String {
    match return_to.filter(|r| !r.is_empty()) {
        Some(r) => with_query_params(SECURITY_PAGE, &[("done", done), ("return_to", r)]),
        None => with_query_params(SECURITY_PAGE, &[("done", done)]),
    }
}

/// The password typed to confirm a change on this page: `Ok(())` when it
/// holds; otherwise the page again with the message beside the field.
async fn password_again(
    state: &AppState,
    viewer: &Viewer,
    enrolling: &Enrolling,
    typed: Option<String>,
    ip: Option<&str>,
) -> Result<Result<(), Response>, PageError> {
    let user = &enrolling.person.user;
    let mut errors = FieldErrors::default();
    match (user.password_hash.as_deref(), typed) {
        (None, _) => errors.add(
            "current_password",
            "Your account has no password here; ask an administrator of this platform to make this change.",
        ),
        (Some(_), None) => errors.add("current_password", "Enter your password to confirm."),
        (Some(stored), Some(typed)) => {
            match super::current_password_holds(state, user, stored, typed, ip).await? {
                Ok(true) => return Ok(Ok(())),
                Ok(false) => errors.add("current_password", "That is not your password."),
                Err(wait) => errors.add("current_password", wait),
            }
        }
    }
    Ok(Err(render_page(
        state,
        viewer,
        StatusCode::BAD_REQUEST,
        enrolling,
        "",
        None,
        errors,
    )
    .await?))
}

/// `POST /account/security/remove` (`factor_id`, `current_password`).
pub async fn remove(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    enrolling: Enrolling,
    CsrfForm { fields: f, .. }: CsrfForm<SecurityForm>,
) -> Result<Response, PageError> {
    let user = &enrolling.person.user;
    let factor_id = f.factor_id.unwrap_or_default();
    let factors = state.store.factors_of_user(&user.id).await?;
    let confirmed: Vec<&Factor> = factors
        .iter()
        .filter(|f| f.confirmed_at.is_some())
        .collect();
    if !confirmed.iter().any(|f| f.id == factor_id) {
        return Err(PageError {
            status: StatusCode::NOT_FOUND,
            title: "Second factor not found",
            message: "That is not one of your second factors, or it was removed already.".into(),
        });
    }
    if confirmed.len() == 1 && mfa::requirement(&state, user).await?.is_some() {
        let mut errors = FieldErrors::default();
        errors.add(
            "factor",
            "This is your only second factor and this platform requires one: set up another before removing it.",
        );
        return render_page(
            &state,
            &viewer,
            StatusCode::CONFLICT,
            &enrolling,
            "",
            None,
            errors,
        )
        .await;
    }
    if let Err(page) = password_again(
        &state,
        &viewer,
        &enrolling,
        f.current_password,
        ip.as_deref(),
    )
    .await?
    {
        return Ok(page);
    }
    let removed = state
        .store
        .remove_factor(
            &user.id,
            &factor_id,
            enrolling.person.actor(&ip),
            state.now(),
        )
        .await?;
    if removed {
        crate::services::mail::security_notice_or_log(
            &state,
            user,
            healthgate_core::recovery::Notice::FactorRemoved,
        )
        .await;
    }
    Ok(Redirect::to(&done_url("removed", None)).into_response())
}

/// `POST /account/security/recovery-codes` (`current_password`): a fresh
/// set of recovery codes, shown once; the old ones stop working.
pub async fn new_codes(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    enrolling: Enrolling,
    CsrfForm { fields: f, .. }: CsrfForm<SecurityForm>,
) -> Result<Response, PageError> {
    let user = &enrolling.person.user;
    if !state.store.has_second_factor(&user.id).await? {
        return Err(PageError::bad_request(
            "Recovery codes stand in for a second factor: set one up first.",
        ));
    }
    if let Err(page) = password_again(
        &state,
        &viewer,
        &enrolling,
        f.current_password,
        ip.as_deref(),
    )
    .await?
    {
        return Ok(page);
    }
    let codes = mfa::new_recovery_codes(&state, user, enrolling.person.actor(&ip)).await?;
    Ok(pages::render(
        StatusCode::OK,
        &CodesPage {
            site: viewer.site(&state.settings),
            codes,
            first: false,
            continue_to: SECURITY_PAGE,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_qr_code_is_an_svg_image() {
        let svg = qr_svg("otpauth://totp/Harbor:jane?secret=GEZDGNBVGY3TQOJQ");
        assert!(
            svg.starts_with("<?xml") || svg.starts_with("<svg"),
            "{svg:.40}"
        );
        assert!(svg.contains("<svg") && svg.contains("</svg>"));
    }

    #[test]
    fn factor_names_are_checked() {
        assert_eq!(
            label_of(None, "Authenticator app").unwrap(),
            "Authenticator app"
        );
        assert_eq!(label_of(Some("  Phone "), "x").unwrap(), "Phone");
        assert!(label_of(Some(&"x".repeat(61)), "x").is_err());
        assert!(label_of(Some("a\u{7}b"), "x").is_err());
    }
}
