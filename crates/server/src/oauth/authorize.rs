//! `GET /oauth/authorize` and the consent decision `POST /oauth/authorize`
//! (RFC 6749 §4.1.1–4.1.2, RFC 7636, RFC 9207).
//!
//! The request is validated the same way on both: the hidden fields of the
//! consent form are never trusted more than the original query. An unknown
//! client or redirect URI gets an error page, never a redirect.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use healthgate_core::authorize::{AuthorizeError, AuthorizeParams, ValidAuthorization, validate};
use healthgate_core::client::Client;
use healthgate_core::error::{ErrorCode, OAuthError};
use healthgate_core::redirect::with_query_params;
use healthgate_core::secret::{SecretKind, mint, new_ordered_id};
use healthgate_core::smart::{
    Launch, PatientLink, SmartContext, UNUSABLE_LAUNCH, is_online_only, needs_patient,
};
use healthgate_core::token::{AuthorizationCode, GrantContext};
use healthgate_core::user::User;
use healthgate_store::Session;

use crate::http::error::PageError;
use crate::http::extract::{
    CHOOSE_A_PASSWORD_FIRST, ENROL_FIRST, NEW_PASSWORD_PAGE, SECOND_FACTOR_PAGE, SECURITY_PAGE,
};
use crate::http::ip::ClientIp;
use crate::http::pages::{self, ChoiceLine, ConsentPage, PatientLine, RefusedPage, Site};
use crate::http::session;
use crate::oauth::consent::{self, Choice};
use crate::oauth::par::{self, Resolved};
use crate::services::photos::served_path;
use crate::state::AppState;
use healthgate_core::event::EventKind;
use healthgate_core::mfa::Acr;
use healthgate_store::Event;

/// The redirect that carries an authorization response: the given
/// parameters, `state` if the request had one, and always `iss` (RFC 9207).
fn respond(
    state: &AppState,
    redirect_uri: &str,
    params: &[(&str, &str)],
    client_state: Option<&str>,
) -> Response {
    let mut all: Vec<(&str, &str)> = params.to_vec();
    if let Some(s) = client_state {
        all.push(("state", s));
    }
    all.push(("iss", &state.issuer));
    Redirect::to(&with_query_params(redirect_uri, &all)).into_response()
}

fn error_redirect(
    state: &AppState,
    redirect_uri: &str,
    error: &OAuthError,
    client_state: Option<&str>,
) -> Response {
    respond(
        state,
        redirect_uri,
        &[
            ("error", error.code.as_str()),
            ("error_description", &error.description),
        ],
        client_state,
    )
}

/// A request that passed every check, with the EHR launch it names.
struct Checked {
    client: Client,
    /// The request's parameters: a pushed request's, or those sent.
    params: AuthorizeParams,
    request: ValidAuthorization,
    launch: Option<Launch>,
}

/// Looks up the client, resolves a pushed request or a request object
/// (`par::resolve`), validates the request, and reads the EHR launch it
/// names. `Err` is the response to send: an error page or an error
/// redirect.
async fn check(state: &AppState, params: AuthorizeParams) -> Result<Checked, Response> {
    let Some(client_id) = params.client_id.as_deref() else {
        return Err(PageError::bad_request(
            "The request does not say which application is asking (client_id is missing).",
        )
        .into_response());
    };
    if params.duplicated.iter().any(|d| d == "client_id") {
        return Err(PageError::bad_request("The request repeats client_id.").into_response());
    }
    let client = match state.store.client(client_id).await {
        Ok(Some(c)) => {
            crate::http::middleware::note_client(&c.id);
            c
        }
        Ok(None) => {
            return Err(PageError::bad_request(
                "The application that sent you here is not registered.",
            )
            .into_response());
        }
        Err(e) => return Err(PageError::from(e).into_response()),
    };
    // A suspended app gets a page, never a redirect: nothing may reach it.
    if client.suspended_at.is_some() {
        return Err(PageError {
            status: StatusCode::FORBIDDEN,
            title: "This app is suspended",
            message: format!(
                "{} has been suspended by the operators of {}, so it cannot ask for access to your account. Nothing was shared with it.",
                client.name, state.settings.platform_name
            ),
        }
        .into_response());
    }
    let Resolved { params, pushed } = par::resolve(state, &client, params)
        .await
        .map_err(IntoResponse::into_response)?;
    let bases = state.settings.fhir_bases();
    let request = match validate(&params, &client, &state.settings.authorize_rules(&bases)) {
        Ok(v) => v,
        Err(AuthorizeError::Page(message)) => {
            return Err(PageError::bad_request(message).into_response());
        }
        Err(AuthorizeError::Redirect {
            redirect_uri,
            error,
            state: s,
        }) => return Err(error_redirect(state, &redirect_uri, &error, s.as_deref())),
    };
    // RFC 9126 §5, §6: pushed first, when the server or the app says so.
    if !pushed && (state.settings.par.required || client.require_par) {
        let error = OAuthError::invalid_request(format!(
            "authorization requests of this client must be pushed first: POST them to {}/oauth/par and send only client_id and request_uri here",
            state.issuer
        ));
        return Err(error_redirect(
            state,
            &request.redirect_uri,
            &error,
            request.state.as_deref(),
        ));
    }
    let launch = match &request.launch {
        None => None,
        Some(value) => {
            let found = state
                .store
                .smart_launch(&healthgate_core::secret::digest(value))
                .await
                .map_err(|e| PageError::from(e).into_response())?;
            let admitted = match &found {
                Some(l) => l.admits(&client.id, request.aud.as_deref(), state.now()),
                None => Err(OAuthError::invalid_request(UNUSABLE_LAUNCH)),
            };
            if let Err(error) = admitted {
                return Err(error_redirect(
                    state,
                    &request.redirect_uri,
                    &error,
                    request.state.as_deref(),
                ));
            }
            found
        }
    };
    Ok(Checked {
        client,
        params,
        request,
        launch,
    })
}

/// Loads the logged-in user, or `None` if the session's user is gone or
/// locked.
async fn session_user(state: &AppState, session: &Session) -> Result<Option<User>, PageError> {
    let Some(user_id) = &session.user_id else {
        return Ok(None);
    };
    Ok(state.store.user(user_id).await?.filter(User::is_active))
}

/// Whether the session's sign-in reached the assurance the request asks
/// for: with two factors asked, a second factor was given, within
/// `max_age` seconds when the request sets one.
fn assurance_met(state: &AppState, request: &ValidAuthorization, session: &Session) -> bool {
    match request.acr {
        Some(Acr::Aal2) => {
            session.amr.multi_factor()
                && request
                    .max_age
                    .is_none_or(|max| session.mfa_at.unwrap_or(0) + max >= state.now())
        }
        Some(Acr::Aal1) | None => true,
    }
}

/// To the login page, then back to this request (`pairs`).
fn login_redirect(pairs: &[(&'static str, String)]) -> Response {
    back_after("/login", pairs)
}

/// To `page`, then back to this request (`pairs`).
fn back_after(page: &str, pairs: &[(&'static str, String)]) -> Response {
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let return_to = with_query_params("/oauth/authorize?", &pairs);
    let target = with_query_params(page, &[("return_to", &return_to)]);
    Redirect::to(&target).into_response()
}

pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = AuthorizeParams::from_pairs(
        url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
            .map(|(k, v)| (k, v.into_owned())),
    );
    request(state, headers, params).await
}

/// An authorization request, by `GET` or `POST` (OpenID Connect Core
/// §3.1.2.1, SMART's `authorize-post`): sign-in, consent or the redirect.
async fn request(state: AppState, headers: HeaderMap, params: AuthorizeParams) -> Response {
    let Checked {
        client,
        params,
        request,
        launch,
    } = match check(&state, params).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let session = match session::logged_in(&state, &headers).await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    // OpenID Connect's prompt and max_age (Core §3.1.2.1): sign in again when
    // asked to, or when the sign-in is older than max_age; with prompt=none,
    // say so to the app instead of showing a page.
    let stale = |s: &Session| {
        request.prompt.login
            || request
                .max_age
                .is_some_and(|max| s.auth_time.unwrap_or(0) + max < state.now())
    };
    let needs_login = session.as_ref().is_none_or(stale);
    if needs_login {
        if request.prompt.none {
            let error = OAuthError::new(ErrorCode::LoginRequired, "the user is not signed in");
            return error_redirect(
                &state,
                &request.redirect_uri,
                &error,
                request.state.as_deref(),
            );
        }
        return login_redirect(&params.without_login_prompt());
    }
    let Some(session) = session else {
        return login_redirect(&params.without_login_prompt());
    };
    let user = match session_user(&state, &session).await {
        Ok(Some(u)) => u,
        Ok(None) => return login_redirect(&params.without_login_prompt()),
        Err(e) => return e.into_response(),
    };
    // A temporary password (an operator reset it): no code is issued until
    // the person chose their own.
    if user.password_is_temporary() {
        if request.prompt.none {
            let error = OAuthError::new(
                ErrorCode::LoginRequired,
                "the user must choose a new password first",
            );
            return error_redirect(
                &state,
                &request.redirect_uri,
                &error,
                request.state.as_deref(),
            );
        }
        return back_after(NEW_PASSWORD_PAGE, &params.without_login_prompt());
    }
    // A second factor is required and there is none yet: no code until
    // the person set one up.
    match crate::services::mfa::must_enrol(&state, &user).await {
        Ok(false) => {}
        Ok(true) if request.prompt.none => {
            let error = OAuthError::new(
                ErrorCode::InteractionRequired,
                "the user must set up a second factor first",
            );
            return error_redirect(
                &state,
                &request.redirect_uri,
                &error,
                request.state.as_deref(),
            );
        }
        Ok(true) => return back_after(SECURITY_PAGE, &params.without_login_prompt()),
        Err(e) => return PageError::from(e).into_response(),
    }
    // Step-up: the app asks for (acr_values) or requires (require_mfa) a
    // sign-in with a second factor, given within max_age when it sets one.
    if !assurance_met(&state, &request, &session) {
        if request.prompt.none {
            let error = OAuthError::new(
                ErrorCode::InteractionRequired,
                "the app requires a second factor the user has not given",
            );
            return error_redirect(
                &state,
                &request.redirect_uri,
                &error,
                request.state.as_deref(),
            );
        }
        let page = match state.store.has_second_factor(&user.id).await {
            Ok(true) => SECOND_FACTOR_PAGE,
            Ok(false) => SECURITY_PAGE,
            Err(e) => return PageError::from(e).into_response(),
        };
        return back_after(page, &params.without_login_prompt());
    }
    let choices = match allowed_choices(&state, &client, &user, &request, launch.as_ref()).await {
        Ok(c) => c,
        Err(response) => return response,
    };
    let patients = match patient_choices(&state, &client, &user, &request, launch.as_ref()).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    // Consent is remembered for confidential clients only: a public client's
    // identity is not proven, so its user is asked every time. A person who
    // could authorize for several organizations, or pick among several
    // patients, is asked which.
    if !client.is_public()
        && !request.prompt.consent
        && let [only] = choices.as_slice()
        && patients.len() <= 1
    {
        match state.store.consent(&user.id, &client.id).await {
            Ok(Some((granted, org)))
                if org.as_deref() == only.organization_id() && only.scope.is_subset(&granted) =>
            {
                let target = Target {
                    launch: launch.as_ref(),
                    patient: patients.first(),
                };
                return issue_code(&state, &user, &session, &request, target, only).await;
            }
            Ok(_) => {}
            Err(e) => return PageError::from(e).into_response(),
        }
    }
    if request.prompt.none {
        let error = OAuthError::new(
            ErrorCode::ConsentRequired,
            "the user has not consented to this request",
        );
        return error_redirect(
            &state,
            &request.redirect_uri,
            &error,
            request.state.as_deref(),
        );
    }
    consent_page(
        &state, &client, &user, &session, &params, &request, &choices, &patients,
    )
}

/// The patients a SMART grant may be for, when it needs one
/// (`smart::needs_patient`): an EHR launch's own (then none to pick), or
/// those linked to the person, the standalone launch's picker. Empty when
/// no patient is needed. A grant that needs a patient and can have none is
/// refused, with a page that says why and `access_denied` for the app.
async fn patient_choices(
    state: &AppState,
    client: &Client,
    user: &User,
    request: &ValidAuthorization,
    launch: Option<&Launch>,
) -> Result<Vec<PatientLink>, Response> {
    if !needs_patient(request.scope.iter()) {
        return Ok(Vec::new());
    }
    if let Some(l) = launch {
        return match l.context.patient {
            Some(_) => Ok(Vec::new()),
            None => Err(refusal(
                state,
                client,
                request,
                format!(
                    "{} needs a patient's records, and it was opened without a patient.",
                    client.name
                ),
            )),
        };
    }
    let linked = state
        .store
        .patient_links(&user.id)
        .await
        .map_err(|e| PageError::from(e).into_response())?;
    if linked.is_empty() {
        return Err(refusal(
            state,
            client,
            request,
            format!(
                "{} needs a patient's records, and no patient record is linked to your account.",
                client.name
            ),
        ));
    }
    Ok(linked)
}

/// What a code is for beyond the person and the scope: the EHR launch it
/// uses, or the patient picked in a standalone launch.
#[derive(Clone, Copy, Default)]
struct Target<'a> {
    launch: Option<&'a Launch>,
    patient: Option<&'a PatientLink>,
}

/// The ways `user` may authorize the request, or the refusal to show: an app
/// not open to the person's user type (HealthTap's members and experts), an
/// organization-level app and a person who administers no organization, or
/// a role that allows none of what is asked, an EHR launch made for
/// someone else. A refusal is a page that explains, and the app gets
/// `access_denied` when the person goes back.
async fn allowed_choices(
    state: &AppState,
    client: &Client,
    user: &User,
    request: &ValidAuthorization,
    launch: Option<&Launch>,
) -> Result<Vec<Choice>, Response> {
    if launch.is_some_and(|l| !l.is_for(&user.id)) {
        return Err(refusal(
            state,
            client,
            request,
            format!(
                "{} was opened for someone else. Sign out, and open it again from your own account.",
                client.name
            ),
        ));
    }
    if !client.serves(user.user_type) {
        return Err(refusal(
            state,
            client,
            request,
            format!(
                "{} is not available to {} accounts.",
                client.name, user.user_type
            ),
        ));
    }
    let choices = consent::choices(state, client, user, &request.scope)
        .await
        .map_err(|e| PageError::from(e).into_response())?;
    if choices.is_empty() {
        return Err(refusal(
            state,
            client,
            request,
            format!(
                "{} is authorized for a whole organization, and only an administrator of the organization can do that.",
                client.name
            ),
        ));
    }
    let usable: Vec<Choice> = choices
        .into_iter()
        .filter(|c| !c.scope.is_empty())
        .collect();
    if usable.is_empty() {
        return Err(refusal(
            state,
            client,
            request,
            format!(
                "Your role does not allow you to grant {} any of the access it asks for.",
                client.name
            ),
        ));
    }
    Ok(usable)
}

/// The page shown instead of consent when the person may not authorize the
/// app, with the way back to the app carrying `error=access_denied`.
fn refusal(
    state: &AppState,
    client: &Client,
    request: &ValidAuthorization,
    why: String,
) -> Response {
    let error = OAuthError::new(
        ErrorCode::AccessDenied,
        why.trim_end_matches('.').to_owned(),
    );
    let mut all: Vec<(&str, &str)> = vec![
        ("error", error.code.as_str()),
        ("error_description", &error.description),
    ];
    if let Some(s) = request.state.as_deref() {
        all.push(("state", s));
    }
    all.push(("iss", &state.issuer));
    let back = with_query_params(&request.redirect_uri, &all);
    pages::render(
        StatusCode::FORBIDDEN,
        &RefusedPage {
            site: Site::focused(&state.settings),
            app_name: &client.name,
            message: &why,
            back: &back,
        },
    )
}

#[allow(clippy::too_many_arguments)]
fn consent_page(
    state: &AppState,
    client: &Client,
    user: &User,
    session: &Session,
    params: &AuthorizeParams,
    request: &ValidAuthorization,
    choices: &[Choice],
    patients: &[PatientLink],
) -> Response {
    let describe = |name: &str| pages::describe_scope(&state.settings, name);
    let scopes = pages::scope_lines(&state.settings, request.scope.iter());
    let options = choices
        .iter()
        .map(|c| {
            let label = match (&c.organization, &c.role, c.organization_level) {
                (Some(org), _, true) => format!("{} (for the whole {})", org.name, org.kind),
                (Some(org), Some(role), false) => format!("{} as {role}", org.name),
                (Some(org), None, false) => org.name.clone(),
                (None, _, _) => "Yourself".to_owned(),
            };
            ChoiceLine {
                value: c.organization_id().unwrap_or("").to_owned(),
                label,
                refused: c
                    .refused
                    .iter()
                    .map(|s| describe(s))
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })
        .collect();
    let redirect_host = url::Url::parse(&request.redirect_uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| request.redirect_uri.clone());
    pages::render(
        StatusCode::OK,
        &ConsentPage {
            site: Site::focused(&state.settings),
            app_name: &client.name,
            app_photo: served_path(&client.id, client.photo_url.as_deref()),
            username: &user.username,
            scopes,
            choices: options,
            patients: patients
                .iter()
                .map(|p| PatientLine {
                    value: p.patient_id.clone(),
                    label: p.display.clone(),
                })
                .collect(),
            csrf_token: &session.csrf_token,
            request: params.to_pairs(),
            redirect_host: &redirect_host,
        },
    )
}

async fn issue_code(
    state: &AppState,
    user: &User,
    session: &Session,
    request: &ValidAuthorization,
    target: Target<'_>,
    choice: &Choice,
) -> Response {
    let now = state.now();
    let code = mint(SecretKind::AuthorizationCode);
    // An EHR launch gives its context when the `launch` scope is granted
    // (it is used once, with this code); a standalone launch, the patient
    // picked (with a banner: the app runs outside any EHR); otherwise a
    // SMART grant knows its FHIR server only.
    let launched = target
        .launch
        .zip(request.launch.as_deref())
        .filter(|_| choice.scope.contains("launch"));
    let smart = match launched {
        Some((l, _)) => Some(l.context.clone()),
        None => request.aud.clone().map(|aud| SmartContext {
            patient: target.patient.map(|p| p.patient_id.clone()),
            need_patient_banner: target.patient.map(|_| true),
            ..SmartContext::for_server(aud)
        }),
    };
    // fhirUser granted: who the person is on the FHIR server, for the ID
    // token (with the first FHIR server when the request named none).
    let fhir_user = user
        .fhir_user
        .as_deref()
        .filter(|_| choice.scope.contains("fhirUser"));
    let smart = match (smart, fhir_user) {
        (smart, None) => smart,
        (Some(context), Some(reference)) => Some(context.with_fhir_user(reference)),
        (None, Some(reference)) => state
            .settings
            .smart
            .fhir_base_urls
            .first()
            .map(|base| SmartContext::for_server(base.as_str()).with_fhir_user(reference)),
    };
    // online_access alone: the refresh tokens last while this sign-in does.
    let smart = if is_online_only(&choice.scope) {
        smart
            .or_else(|| {
                let base = state.settings.smart.fhir_base_urls.first()?;
                Some(SmartContext::for_server(base.as_str()))
            })
            .map(|context| SmartContext {
                online_session: Some(session.id_digest.clone()),
                ..context
            })
    } else {
        smart
    };
    let record = AuthorizationCode {
        family_id: new_ordered_id("fam", now),
        client_id: request.client_id.clone(),
        user_id: user.id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        redirect_uri_provided: request.redirect_uri_provided,
        scope: choice.scope.clone(),
        code_challenge: request.code_challenge.clone(),
        created_at: now,
        expires_at: now + state.policy.code_ttl,
        grant: GrantContext {
            smart,
            ..choice.grant()
        },
        nonce: request.nonce.clone(),
        auth_time: session.auth_time,
        amr: session.amr.clone(),
        dpop_jkt: request.dpop_jkt.clone(),
    };
    let stored = match launched {
        Some((_, value)) => {
            state
                .store
                .insert_launched_authorization_code(
                    &code.digest,
                    &record,
                    &healthgate_core::secret::digest(value),
                )
                .await
        }
        None => state
            .store
            .insert_authorization_code(&code.digest, &record)
            .await
            .map(|()| true),
    };
    match stored {
        Ok(true) => {}
        // Used by another request, or expired, since it was read.
        Ok(false) => {
            return error_redirect(
                state,
                &request.redirect_uri,
                &OAuthError::invalid_request(UNUSABLE_LAUNCH),
                request.state.as_deref(),
            );
        }
        Err(e) => return PageError::from(e).into_response(),
    }
    respond(
        state,
        &request.redirect_uri,
        &[("code", &code.value)],
        request.state.as_deref(),
    )
}

/// The consent form: `csrf_token`, `decision` (`allow` or `deny`) and the
/// original request's parameters; or, with neither of the first two, an
/// authorization request sent by POST.
pub async fn post(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut csrf = None;
    let mut decision = None;
    let mut organization = None;
    let mut picked_patient = None;
    let mut rest = Vec::new();
    for (k, v) in url::form_urlencoded::parse(&body) {
        match &*k {
            "csrf_token" => csrf = Some(v.into_owned()),
            "decision" => decision = Some(v.into_owned()),
            "organization_id" => organization = Some(v.into_owned()),
            "patient" => picked_patient = Some(v.into_owned()),
            _ => rest.push((k.into_owned(), v.into_owned())),
        }
    }
    // Without a decision or a CSRF token, the POST is not the consent
    // form: it is an app's authorization request sent by POST.
    if decision.is_none() && csrf.is_none() {
        return request(state, headers, AuthorizeParams::from_pairs(rest)).await;
    }
    let session = match session::current(&state, &headers).await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = session::check_csrf(&state, &headers, session.as_ref(), csrf.as_deref()) {
        return e.into_response();
    }
    let params = AuthorizeParams::from_pairs(rest);
    let Checked {
        client,
        params: _,
        request,
        launch,
    } = match check(&state, params).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let user = match session.as_ref() {
        Some(s) => match session_user(&state, s).await {
            Ok(Some(u)) => u,
            Ok(None) => return PageError::forbidden("Please sign in again.").into_response(),
            Err(e) => return e.into_response(),
        },
        None => return PageError::forbidden("Please sign in again.").into_response(),
    };
    if user.password_is_temporary() {
        return PageError::forbidden(CHOOSE_A_PASSWORD_FIRST).into_response();
    }
    match crate::services::mfa::must_enrol(&state, &user).await {
        Ok(false) => {}
        Ok(true) => return PageError::forbidden(ENROL_FIRST).into_response(),
        Err(e) => return PageError::from(e).into_response(),
    }
    if let Some(s) = &session
        && !assurance_met(&state, &request, s)
    {
        return PageError::forbidden(
            "This app needs you to confirm it is you with your second factor. Go back to the app and start again.",
        )
        .into_response();
    }
    let choices = match allowed_choices(&state, &client, &user, &request, launch.as_ref()).await {
        Ok(c) => c,
        Err(response) => return response,
    };
    let patients = match patient_choices(&state, &client, &user, &request, launch.as_ref()).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let now = state.now();
    match decision.as_deref() {
        Some("allow") => {
            // The patient the person picked (the only one there is, when
            // there is one): never one not linked to them.
            let picked = picked_patient.as_deref();
            let patient = match patients.as_slice() {
                [] => None,
                [only] if picked.is_none_or(|p| p == only.patient_id) => Some(only),
                all => match all.iter().find(|p| Some(p.patient_id.as_str()) == picked) {
                    Some(p) => Some(p),
                    None => {
                        return PageError::bad_request("Choose whose records the app is for.")
                            .into_response();
                    }
                },
            };
            // The organization the person picked (the only one there is,
            // when there is one): never one they do not belong to.
            let choice = match (choices.as_slice(), organization.as_deref()) {
                ([only], None) => only,
                (_, picked) => {
                    let picked = picked.filter(|p| !p.is_empty());
                    match choices.iter().find(|c| c.organization_id() == picked) {
                        Some(c) => c,
                        None => {
                            return PageError::bad_request(
                                "Choose which organization the app is for.",
                            )
                            .into_response();
                        }
                    }
                }
            };
            if !client.is_public()
                && let Err(e) = state
                    .store
                    .remember_consent(
                        &user.id,
                        &client.id,
                        &choice.scope,
                        choice.organization_id(),
                        now,
                    )
                    .await
            {
                return PageError::from(e).into_response();
            }
            let mut event = Event::new(EventKind::ConsentGranted).data(serde_json::json!({
                "scope": choice.scope.to_string(),
                "refused": choice.refused,
                "resource_owner": { "id": choice.owner.id, "type": choice.owner.kind },
                "organization_level": choice.organization_level,
            }));
            if let Some(org) = choice.organization_id() {
                event = event.organization(org);
            }
            if let Err(e) = record_decision(&state, event, &user, &client, &ip).await {
                return e.into_response();
            }
            let Some(session) = session.as_ref() else {
                return PageError::forbidden("Please sign in again.").into_response();
            };
            let target = Target {
                launch: launch.as_ref(),
                patient,
            };
            issue_code(&state, &user, session, &request, target, choice).await
        }
        Some("deny") => {
            let event = Event::new(EventKind::ConsentDenied);
            if let Err(e) = record_decision(&state, event, &user, &client, &ip).await {
                return e.into_response();
            }
            let error = OAuthError::new(ErrorCode::AccessDenied, "the user denied the request");
            error_redirect(
                &state,
                &request.redirect_uri,
                &error,
                request.state.as_deref(),
            )
        }
        _ => PageError::bad_request("Choose Allow or Deny.").into_response(),
    }
}

/// Records a consent decision; if the event cannot be written, the decision
/// is not carried out.
async fn record_decision(
    state: &AppState,
    event: Event<'_>,
    user: &User,
    client: &Client,
    ip: &ClientIp,
) -> Result<(), PageError> {
    let event = event
        .actor(Some(&user.id))
        .client(&client.id)
        .subject(&user.id)
        .ip(ip.as_deref());
    state.store.record_event(state.now(), &event).await?;
    Ok(())
}
