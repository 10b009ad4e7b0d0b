//! The developer portal (`/developers`): a partner developer creates an
//! account or signs in, registers an app with the fields the seeds' forms
//! ask for (HealthTap's name, photo, redirect URIs, scope and user-type
//! checkboxes; Hint's description, connect URL and webhook URL), sees its
//! APP_ID and APP_SECRET (the secret once), rotates the secret, edits and
//! deletes the app, and follows its integrations and webhook deliveries.
//!
//! Every rule about what may be registered is `admin`'s, shared with the
//! CLI; this module turns forms into those requests and their refusals into
//! messages next to the fields. An app is only ever shown to, or changed
//! by, the person who registered it: anyone else gets "no such app".

use askama::Template;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use healthgate_core::client::Client;
use healthgate_core::listing::ListingState;
use healthgate_core::owner::AuthorizationLevel;
use healthgate_core::redirect::with_query_params;
use healthgate_core::user::UserType;
use healthgate_store::{Actor, Session};
use serde::Deserialize;

use crate::config::Settings;
use crate::http::error::PageError;
use crate::http::error::sentence;
use crate::http::extract::{CsrfForm, SignedIn, Viewer, choose_password_first};
use crate::http::forms::{FieldErrors, Form};
use crate::http::ip::ClientIp;
use crate::http::pages::{self, ScopeLine, Site, Stamp, format_utc};
use crate::http::routes::Routes;
use crate::http::session::{self, Browser};
use crate::services::admin::{self, AdminError, ClientChanges, Creator, NewClient, NewUser};
use crate::services::photos::{Photo, served_path};
use crate::state::AppState;

const HOME: &str = "/developers";

pub fn routes() -> Routes {
    Routes::new()
        .route(HOME, get(index))
        .route("/developers/signup", get(signup_page).post(signup))
        .route("/developers/apps/new", get(new_app))
        .route("/developers/apps", post(create_app))
        .route("/developers/apps/{id}", get(show_app))
        .route("/developers/apps/{id}/edit", get(edit_app).post(update_app))
        .route(
            "/developers/apps/{id}/secret",
            get(confirm_rotate_secret).post(rotate_secret),
        )
        .route("/developers/apps/{id}/credentials", get(credentials))
        .route(
            "/developers/apps/{id}/webhook-secret",
            post(rotate_webhook_secret),
        )
        .route(
            "/developers/apps/{id}/delete",
            get(confirm_delete).post(delete_app),
        )
        .route("/developers/apps/{id}/listing", post(change_listing))
        .route("/apps/{id}/photo", get(photo))
}

/// The app with this id if the person registered it; anyone else is told
/// there is no such app, so ids cannot be probed.
pub(crate) async fn owned_app(
    state: &AppState,
    user_id: &str,
    id: &str,
) -> Result<Client, PageError> {
    match state.store.client(id).await? {
        Some(c) if c.owner_id.as_deref() == Some(user_id) => Ok(c),
        _ => Err(PageError {
            status: StatusCode::NOT_FOUND,
            title: "No such app",
            message: "You have no app with this id. It may have been deleted.".into(),
        }),
    }
}

/// The form of an action on one of the developer's apps: read (with an
/// uploaded file of at most `max_file` bytes), its CSRF token and origin
/// checked, and the app, which must be theirs.
/// The developer's own app `id` behind a checked form.
async fn own_app(state: &AppState, person: &SignedIn, id: &str) -> Result<Client, PageError> {
    owned_app(state, &person.user.id, id).await
}

/// Every field the portal's app forms send.
#[derive(Debug, Default, Deserialize)]
pub struct AppFields {
    name: Option<String>,
    description: Option<String>,
    photo_url: Option<String>,
    redirect_uris: Option<String>,
    #[serde(default)]
    scope: Vec<String>,
    /// SMART scopes, space-separated (`[smart]` on).
    smart_scope: Option<String>,
    launch_url: Option<String>,
    jwks_uri: Option<String>,
    jwks: Option<String>,
    #[serde(default)]
    user_type: Vec<String>,
    client_type: Option<String>,
    authorization_level: Option<String>,
    connect_url: Option<String>,
    webhook_url: Option<String>,
    #[serde(default)]
    published: bool,
    #[serde(default)]
    require_mfa: bool,
    #[serde(default)]
    require_dpop: bool,
    #[serde(default)]
    require_par: bool,
    #[serde(default)]
    remove_photo: bool,
    confirm_name: Option<String>,
    /// The app page's listing buttons: `request` or `withdraw`.
    listing: Option<String>,
}

// ---------------------------------------------------------------- index

/// One of the developer's apps in the list.
pub struct AppSummary {
    pub id: String,
    pub name: String,
    /// Where healthgate serves its photo.
    pub photo_url: Option<String>,
    pub kind: &'static str,
    pub suspended: bool,
    pub created: Stamp,
}

#[derive(Template)]
#[template(path = "developers.html")]
pub struct DevelopersPage<'a> {
    pub site: Site<'a>,
    pub username: Option<&'a str>,
    pub apps: Vec<AppSummary>,
    pub signup: bool,
    pub notice: Option<&'a str>,
}

#[derive(Deserialize)]
pub struct IndexQuery {
    deleted: Option<String>,
}

/// `GET /developers`: the developer's apps, or what the portal is and how
/// to get in.
pub async fn index(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Query(q): Query<IndexQuery>,
) -> Result<Response, PageError> {
    let site = viewer.site(&state.settings);
    let signup = state.settings.developer_signup;
    let Some(session) = session::logged_in(&state, &headers).await? else {
        return Ok(pages::render(
            StatusCode::OK,
            &DevelopersPage {
                site,
                username: None,
                apps: Vec::new(),
                signup,
                notice: None,
            },
        ));
    };
    let user_id = session.user_id.unwrap_or_default();
    let Some(user) = state.store.user(&user_id).await? else {
        return Ok(Redirect::to("/login?return_to=/developers").into_response());
    };
    if let Some(first) = choose_password_first(&user, "/developers") {
        return Ok(first);
    }
    let apps = state
        .store
        .clients_of_owner(&user.id)
        .await?
        .into_iter()
        .map(|c| AppSummary {
            kind: c.kind.as_str(),
            suspended: c.suspended_at.is_some(),
            created: Stamp::at(c.created_at),
            photo_url: served_path(&c.id, c.photo_url.as_deref()),
            id: c.id,
            name: c.name,
        })
        .collect();
    let notice = q
        .deleted
        .is_some()
        .then_some("The app was deleted, with every token, code and integration it had.");
    Ok(pages::render(
        StatusCode::OK,
        &DevelopersPage {
            site,
            username: Some(user.name.as_deref().unwrap_or(&user.username)),
            apps,
            signup,
            notice,
        },
    ))
}

// ---------------------------------------------------------------- sign-up

#[derive(Template)]
#[template(path = "developers_signup.html")]
pub struct SignupPage<'a> {
    pub site: Site<'a>,
    pub csrf_token: &'a str,
    pub username: &'a str,
    pub name: &'a str,
    pub email: &'a str,
    pub errors: FieldErrors,
}

fn signup_closed() -> PageError {
    PageError {
        status: StatusCode::FORBIDDEN,
        title: "Sign-up is closed",
        message: "This platform registers developer accounts itself. Ask its operator for one, then sign in."
            .into(),
    }
}

/// `GET /developers/signup`.
pub async fn signup_page(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    if !state.settings.developer_signup {
        return Err(signup_closed());
    }
    let (session, cookie) = session::current_or_anonymous(&state, &headers, &ip).await?;
    let mut response = pages::render(
        StatusCode::OK,
        &SignupPage {
            site: viewer.site(&state.settings),
            csrf_token: &session.csrf_token,
            username: "",
            name: "",
            email: "",
            errors: FieldErrors::default(),
        },
    );
    if let Some(c) = cookie {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(response)
}

/// `POST /developers/signup` (`username`, `name`, `email`, `password`,
/// `password_confirmation`): creates the account and signs it in.
pub async fn signup(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    request: Request,
) -> Result<Response, PageError> {
    if !state.settings.developer_signup {
        return Err(signup_closed());
    }
    let (headers, form) = Form::read(&state, request, 0).await?;
    let session = session::current(&state, &headers).await?;
    session::check_csrf(
        &state,
        &headers,
        session.as_ref(),
        form.text("csrf_token").as_deref(),
    )?;
    let Some(session) = session else {
        return Err(PageError::forbidden("Your session has expired."));
    };
    let username = form.text("username").unwrap_or_default();
    let name = form.text("name");
    let email = form.text("email");
    // Passwords are taken as typed: spaces are part of them.
    let password = form.as_typed("password").unwrap_or_default().to_owned();
    let mut errors = FieldErrors::default();
    if username.is_empty() {
        errors.add("username", "Choose a username.");
    }
    if password.is_empty() {
        errors.add("password", "Choose a password.");
    } else if form.as_typed("password_confirmation") != Some(password.as_str()) {
        errors.add("password_confirmation", "The two passwords differ.");
    }
    let request = NewUser {
        username: username.clone(),
        name: name.clone(),
        password: Some(password),
        email: email.clone(),
        user_type: UserType::Member,
    };
    let created = if errors.is_empty() {
        admin::create_user(
            &state.store,
            state.clock.as_ref(),
            request,
            Creator::Themselves { ip: ip.as_deref() },
        )
        .await
        .map(Some)
        .or_else(|e| field_error(e, &mut errors).map(|()| None))?
    } else {
        add_refusals(&mut errors, admin::new_user_refusals(&request));
        None
    };
    let Some(user) = created else {
        return Ok(pages::render(
            StatusCode::BAD_REQUEST,
            &SignupPage {
                site: viewer.site(&state.settings),
                csrf_token: &session.csrf_token,
                username: &username,
                name: name.as_deref().unwrap_or_default(),
                email: email.as_deref().unwrap_or_default(),
                errors,
            },
        ));
    };
    let (_, cookie) = session::start(
        &state,
        Some(&session.id_digest),
        Some(user.id),
        Browser::of(&headers, &ip),
    )
    .await?;
    let mut response = Redirect::to(HOME).into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}

/// Puts every refusal of `admin` next to its field; other failures pass on.
fn field_error(e: AdminError, errors: &mut FieldErrors) -> Result<(), PageError> {
    match e.into_field_refusals() {
        Ok(refusals) => {
            for (field, message) in refusals {
                errors.add(field, sentence(&message));
            }
            Ok(())
        }
        Err(AdminError::Invalid(message)) => {
            errors.add("form", sentence(&message));
            Ok(())
        }
        Err(other) => Err(other.into()),
    }
}

/// Adds `admin`'s refusals of a form that also broke the page's own rules,
/// beside them: a field the page refused already keeps its own message.
fn add_refusals(errors: &mut FieldErrors, refusals: Vec<admin::FieldRefusal>) {
    let others: Vec<_> = refusals
        .into_iter()
        .filter(|(field, _)| errors.of(field).is_none())
        .collect();
    for (field, message) in others {
        errors.add(field, sentence(&message));
    }
}

// ---------------------------------------------------------------- app form

/// What the registration form holds, to fill it again after a refusal.
pub struct AppFormValues {
    pub name: String,
    pub description: String,
    pub photo_url: String,
    pub redirect_uris: String,
    pub scopes: Vec<String>,
    pub user_types: Vec<String>,
    pub public: bool,
    pub organization_level: bool,
    pub connect_url: String,
    pub webhook_url: String,
    pub published: bool,
    /// Every sign-in that authorizes the app must give a second factor.
    pub require_mfa: bool,
    /// Every token request must carry a DPoP proof (RFC 9449).
    pub require_dpop: bool,
    /// Every authorization request must be pushed first (RFC 9126).
    pub require_par: bool,
    /// The scopes outside the `[scopes]` vocabulary (SMART's), as typed.
    pub smart_scopes: String,
    pub launch_url: String,
    /// `private_key_jwt` keys, by URL or as a JWK Set.
    pub jwks_uri: String,
    pub jwks: String,
}

impl AppFormValues {
    fn blank() -> Self {
        Self {
            name: String::new(),
            description: String::new(),
            photo_url: String::new(),
            redirect_uris: String::new(),
            scopes: Vec::new(),
            user_types: UserType::ALL
                .iter()
                .map(|t| t.as_str().to_owned())
                .collect(),
            public: false,
            organization_level: false,
            connect_url: String::new(),
            webhook_url: String::new(),
            published: false,
            require_mfa: false,
            require_dpop: false,
            require_par: false,
            smart_scopes: String::new(),
            launch_url: String::new(),
            jwks_uri: String::new(),
            jwks: String::new(),
        }
    }

    /// The form for `c`. A photo healthgate keeps leaves the address field
    /// blank; an address kept from before photos were fetched fills it, so
    /// saving the form fetches it.
    fn of(settings: &Settings, c: &Client) -> Self {
        let stored = served_path(&c.id, c.photo_url.as_deref()).is_some();
        let (vocabulary, smart): (Vec<&str>, Vec<&str>) = c
            .allowed_scopes
            .iter()
            .partition(|s| settings.scopes.contains_key(*s));
        Self {
            name: c.name.clone(),
            description: c.description.clone().unwrap_or_default(),
            photo_url: if stored {
                String::new()
            } else {
                c.photo_url.clone().unwrap_or_default()
            },
            redirect_uris: c
                .redirect_uris
                .iter()
                .map(|u| u.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            scopes: vocabulary.into_iter().map(str::to_owned).collect(),
            user_types: c.user_types.iter().map(|t| t.as_str().to_owned()).collect(),
            public: c.is_public(),
            organization_level: c.authorization_level == AuthorizationLevel::Organization,
            connect_url: c.connect_redirect_url.clone().unwrap_or_default(),
            webhook_url: c.webhook_url.clone().unwrap_or_default(),
            published: c.listing.state.is_wanted(),
            require_mfa: c.require_mfa,
            require_dpop: c.require_dpop,
            require_par: c.require_par,
            smart_scopes: smart.join(" "),
            launch_url: c.launch_url.clone().unwrap_or_default(),
            jwks_uri: c.jwks_uri.clone().unwrap_or_default(),
            jwks: c.jwks.clone().unwrap_or_default(),
        }
    }

    fn read(f: &AppFields) -> Self {
        let text = |v: &Option<String>| v.as_deref().map(str::trim).unwrap_or_default().to_owned();
        Self {
            name: text(&f.name),
            description: text(&f.description),
            photo_url: text(&f.photo_url),
            redirect_uris: text(&f.redirect_uris),
            scopes: f.scope.clone(),
            user_types: f.user_type.clone(),
            public: text(&f.client_type) == "public",
            organization_level: text(&f.authorization_level) == "organization",
            connect_url: text(&f.connect_url),
            webhook_url: text(&f.webhook_url),
            published: f.published,
            require_mfa: f.require_mfa,
            require_dpop: f.require_dpop,
            require_par: f.require_par,
            smart_scopes: text(&f.smart_scope),
            launch_url: text(&f.launch_url),
            jwks_uri: text(&f.jwks_uri),
            jwks: text(&f.jwks),
        }
    }

    /// The ticked scopes and the typed SMART ones, as one scope string.
    fn scope(&self) -> String {
        let mut all: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
        all.extend(self.smart_scopes.split_whitespace());
        all.join(" ")
    }

    /// The page's own check: some scope, ticked or typed.
    fn check_scope(&self, errors: &mut FieldErrors) {
        if self.scope().is_empty() {
            errors.add("scope", "Tick at least one scope.");
        }
    }

    fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    fn has_user_type(&self, t: &str) -> bool {
        self.user_types.iter().any(|s| s == t)
    }

    fn uris(&self) -> Vec<String> {
        self.redirect_uris
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The user types ticked; unknown values are reported.
    fn parsed_user_types(&self, errors: &mut FieldErrors) -> Vec<UserType> {
        let mut out = Vec::new();
        for t in &self.user_types {
            match t.parse::<UserType>() {
                Ok(t) => out.push(t),
                Err(_) => errors.add("user_types", format!("Unknown user type {t:?}.")),
            }
        }
        if out.is_empty() && errors.of("user_types").is_none() {
            errors.add("user_types", "Tick at least one kind of user.");
        }
        out
    }

    fn level(&self) -> AuthorizationLevel {
        if self.organization_level {
            AuthorizationLevel::Organization
        } else {
            AuthorizationLevel::User
        }
    }
}

#[derive(Template)]
#[template(path = "developers_app_form.html")]
pub struct AppFormPage<'a> {
    pub site: Site<'a>,
    pub csrf_token: &'a str,
    /// `None` when registering; the app when editing.
    pub app: Option<&'a Client>,
    /// Where healthgate serves the app's current photo.
    pub photo: Option<String>,
    pub values: AppFormValues,
    /// Every scope of the vocabulary, as a checkbox.
    pub scope_choices: Vec<ScopeLine>,
    /// `[smart]` is on: SMART scopes and the launch URL are offered.
    pub smart: bool,
    pub errors: FieldErrors,
}

fn scope_choices(state: &AppState) -> Vec<ScopeLine> {
    pages::scope_lines(
        &state.settings,
        state.settings.scopes.keys().map(String::as_str),
    )
}

fn form_page(
    state: &AppState,
    viewer: &Viewer,
    status: StatusCode,
    csrf_token: &str,
    app: Option<&Client>,
    values: AppFormValues,
    errors: FieldErrors,
) -> Response {
    pages::render(
        status,
        &AppFormPage {
            site: viewer.site(&state.settings),
            csrf_token,
            photo: app.and_then(|a| served_path(&a.id, a.photo_url.as_deref())),
            app,
            values,
            scope_choices: scope_choices(state),
            smart: state.settings.smart.enabled(),
            errors,
        },
    )
}

/// `GET /developers/apps/new`.
pub async fn new_app(
    State(state): State<AppState>,
    viewer: Viewer,
    SignedIn { session, user: _ }: SignedIn,
) -> Result<Response, PageError> {
    Ok(form_page(
        &state,
        &viewer,
        StatusCode::OK,
        &session.csrf_token,
        None,
        AppFormValues::blank(),
        FieldErrors::default(),
    ))
}

/// The photo the form chose: an uploaded file (checked to be an image) or
/// a URL. Returns the uploaded image's type and bytes separately, as it can
/// only be stored once the app has an id.
fn chosen_photo(form: &Form, errors: &mut FieldErrors) -> Option<Photo> {
    let upload = form.file("photo")?;
    match Photo::recognise(upload.bytes.to_vec()) {
        Some(photo) => Some(photo),
        None => {
            errors.add("photo", "The photo must be a PNG, JPEG, GIF or WebP image.");
            None
        }
    }
}

/// Stores an uploaded photo and points the app's `photo_url` at it.
async fn save_photo(state: &AppState, client_id: &str, photo: &Photo) -> Result<(), PageError> {
    admin::store_photo(
        &state.store,
        &state.settings,
        state.clock.as_ref(),
        client_id,
        photo,
    )
    .await?;
    Ok(())
}

#[derive(Template)]
#[template(path = "developers_secret.html")]
pub struct SecretPage<'a> {
    pub site: Site<'a>,
    pub app: &'a Client,
    pub secret: Option<&'a str>,
    pub created: bool,
    /// Until when the secret a rotation replaced keeps working.
    pub previous_until: Option<Stamp>,
}

/// `POST /developers/apps` (multipart or URL-encoded): registers an app and
/// shows its APP_ID and, once, its APP_SECRET.
pub async fn create_app(
    State(state): State<AppState>,
    viewer: Viewer,
    ip: ClientIp,
    person: SignedIn,
    CsrfForm { fields, form, .. }: CsrfForm<AppFields>,
) -> Result<Response, PageError> {
    let (session, user_id) = (&person.session, person.user.id.clone());
    let values = AppFormValues::read(&fields);
    let mut errors = FieldErrors::default();
    let upload = chosen_photo(&form, &mut errors);
    values.check_scope(&mut errors);
    let user_types = values.parsed_user_types(&mut errors);
    let request = NewClient {
        name: values.name.clone(),
        redirect_uris: values.uris(),
        scope: values.scope(),
        public: values.public,
        photo_url: Some(values.photo_url.clone()).filter(|_| upload.is_none()),
        user_types,
        authorization_level: values.level(),
        description: Some(values.description.clone()),
        connect_redirect_url: Some(values.connect_url.clone()),
        webhook_url: Some(values.webhook_url.clone()),
        published: values.published,
        owner_id: Some(user_id.clone()),
        // Only operators make an app a resource server or a SMART
        // launcher.
        resource_server: false,
        require_mfa: values.require_mfa,
        require_dpop: values.require_dpop,
        require_par: values.require_par,
        smart_launcher: false,
        launch_url: Some(values.launch_url.clone()),
        jwks_uri: Some(values.jwks_uri.clone()),
        jwks: Some(values.jwks.clone()),
        ..Default::default()
    };
    // Every mistake at once: the page's own checks, then every one of
    // `admin`'s, registering nothing while any remains.
    let registered = if errors.is_empty() {
        admin::create_client(
            &state.store,
            &state.settings,
            state.clock.as_ref(),
            request,
            Actor::user(&user_id, ip.as_deref()),
        )
        .await
        .map(Some)
        .or_else(|e| field_error(e, &mut errors).map(|()| None))?
    } else {
        add_refusals(
            &mut errors,
            admin::new_client_refusals(&state.settings, &request),
        );
        None
    };
    let Some((mut app, secret)) = registered else {
        return Ok(form_page(
            &state,
            &viewer,
            StatusCode::BAD_REQUEST,
            &session.csrf_token,
            None,
            values,
            errors,
        ));
    };
    if let Some(photo) = &upload {
        save_photo(&state, &app.id, photo).await?;
        app = state.store.client(&app.id).await?.unwrap_or(app);
    }
    shown_once(&state, session, &app.id, secret.as_deref(), "created").await
}

/// How long a registered or rotated APP_SECRET waits, sealed in a cookie of
/// the developer's browser, for the page that shows it once.
const SHOWN_ONCE_TTL: i64 = 300;

fn shown_once_cookie(state: &AppState) -> &'static str {
    if state.settings.secure_cookies() {
        "__Host-hg_shown_once"
    } else {
        "hg_shown_once"
    }
}

/// The key APP_SECRETs are sealed with on their way to the page that shows
/// them once.
async fn shown_once_key(state: &AppState) -> Result<[u8; 32], PageError> {
    let instance = crate::services::secrets::instance_key(&state.store, &state.settings).await?;
    Ok(healthgate_core::jose::derive_key(
        &instance,
        "healthgate shown-once secrets v1",
    ))
}

/// Post/redirect/get for a new APP_SECRET: the action answers 303 to the
/// credentials page with the secret sealed (AES-256-GCM, bound to the app,
/// this session and five minutes) in a cookie; that page shows it once and
/// clears the cookie, so reloading it repeats nothing and shows no secret.
/// Nothing is kept on the server: any node opens the cookie.
async fn shown_once(
    state: &AppState,
    session: &Session,
    app_id: &str,
    secret: Option<&str>,
    done: &str,
) -> Result<Response, PageError> {
    let target = with_query_params(
        &format!("/developers/apps/{app_id}/credentials"),
        &[("done", done)],
    );
    let mut response = Redirect::to(&target).into_response();
    if let Some(secret) = secret {
        let sealed = serde_json::json!({
            "app": app_id,
            "session": session.id_digest,
            "secret": secret,
            "until": state.now() + SHOWN_ONCE_TTL,
        });
        let sealed = healthgate_core::jose::seal(
            &shown_once_key(state).await?,
            sealed.to_string().as_bytes(),
        )
        .map_err(|_| {
            PageError::from(healthgate_store::StoreError::Corrupt(
                "sealing failed".into(),
            ))
        })?;
        let cookie = session::cookie(
            state,
            shown_once_cookie(state),
            &sealed,
            SHOWN_ONCE_TTL,
            "Strict",
        );
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

#[derive(Deserialize)]
pub struct CredentialsQuery {
    done: Option<String>,
}

/// `GET /developers/apps/{id}/credentials`: the APP_ID and, once, the
/// APP_SECRET an action just made; reloaded, it says the secret was shown.
pub async fn credentials(
    State(state): State<AppState>,
    viewer: Viewer,
    person: SignedIn,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<CredentialsQuery>,
) -> Result<Response, PageError> {
    let app = own_app(&state, &person, &id).await?;
    let name = shown_once_cookie(&state);
    let presented = session::cookie_value(&headers, name);
    let key = shown_once_key(&state).await?;
    let secret = presented
        .and_then(|sealed| healthgate_core::jose::open(&key, sealed).ok())
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .filter(|v| {
            v["app"] == app.id.as_str()
                && v["session"] == person.session.id_digest.as_str()
                && v["until"]
                    .as_i64()
                    .is_some_and(|until| state.now() <= until)
        })
        .and_then(|v| v["secret"].as_str().map(str::to_owned));
    let mut response = pages::render(
        StatusCode::OK,
        &SecretPage {
            site: viewer.site(&state.settings),
            app: &app,
            secret: secret.as_deref(),
            created: q.done.as_deref() == Some("created"),
            previous_until: app.previous_secret_expires_at(state.now()).map(Stamp::at),
        },
    );
    let clear = session::cookie(&state, name, "", 0, "Strict");
    response.headers_mut().append(header::SET_COOKIE, clear);
    crate::http::error::no_store(&mut response);
    Ok(response)
}

/// `GET /developers/apps/{id}/edit`.
pub async fn edit_app(
    State(state): State<AppState>,
    viewer: Viewer,
    SignedIn { session, user }: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let app = owned_app(&state, &user.id, &id).await?;
    Ok(form_page(
        &state,
        &viewer,
        StatusCode::OK,
        &session.csrf_token,
        Some(&app),
        AppFormValues::of(&state.settings, &app),
        FieldErrors::default(),
    ))
}

/// `POST /developers/apps/{id}/edit`: saves the changed registration.
pub async fn update_app(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    ip: ClientIp,
    person: SignedIn,
    CsrfForm { fields, form, .. }: CsrfForm<AppFields>,
) -> Result<Response, PageError> {
    let app = own_app(&state, &person, &id).await?;
    let session = &person.session;
    let mut values = AppFormValues::read(&fields);
    // The kind of client is chosen once: a secret cannot appear or vanish.
    values.public = app.is_public();
    let mut errors = FieldErrors::default();
    let upload = chosen_photo(&form, &mut errors);
    values.check_scope(&mut errors);
    let user_types = values.parsed_user_types(&mut errors);
    let stored_before = served_path(&app.id, app.photo_url.as_deref()).is_some();
    // A new upload or a URL (fetched by `admin`) replaces the photo;
    // "remove" clears it; else a stored photo stays.
    let photo_url = if fields.remove_photo {
        Some(None)
    } else if upload.is_some() || (values.photo_url.is_empty() && stored_before) {
        None
    } else {
        Some(Some(values.photo_url.clone()))
    };
    let changes = ClientChanges {
        name: Some(values.name.clone()),
        redirect_uris: Some(values.uris()),
        scope: Some(values.scope()),
        user_types: Some(user_types),
        photo_url,
        description: Some(Some(values.description.clone())),
        connect_redirect_url: Some(Some(values.connect_url.clone())),
        webhook_url: Some(Some(values.webhook_url.clone())),
        published: Some(values.published),
        authorization_level: Some(values.level()),
        require_mfa: Some(values.require_mfa),
        require_dpop: Some(values.require_dpop),
        require_par: Some(values.require_par),
        launch_url: Some(Some(values.launch_url.clone())),
        jwks_uri: Some(Some(values.jwks_uri.clone())),
        jwks: Some(Some(values.jwks.clone())),
        ..ClientChanges::default()
    };
    let saved = if errors.is_empty() {
        admin::update_client(
            &state.store,
            &state.settings,
            state.clock.as_ref(),
            &app.id,
            changes,
            person.actor(&ip),
        )
        .await
        .map(Some)
        .or_else(|e| field_error(e, &mut errors).map(|()| None))?
    } else {
        let refusals =
            admin::client_changes_refusals(&state.store, &state.settings, &app.id, changes).await?;
        add_refusals(&mut errors, refusals);
        None
    };
    if saved.is_none() {
        return Ok(form_page(
            &state,
            &viewer,
            StatusCode::BAD_REQUEST,
            &session.csrf_token,
            Some(&app),
            values,
            errors,
        ));
    }
    if let Some(photo) = &upload {
        save_photo(&state, &app.id, photo).await?;
    }
    let back = with_query_params(&format!("/developers/apps/{}", app.id), &[("saved", "1")]);
    Ok(Redirect::to(&back).into_response())
}

// ---------------------------------------------------------------- app page

/// One practice connected to the app.
pub struct IntegrationLine {
    pub id: String,
    pub organization: String,
    pub status: &'static str,
    pub created: Stamp,
    pub activated: Option<Stamp>,
}

/// One webhook delivery.
pub struct DeliveryLine {
    pub id: String,
    pub event: String,
    pub status: String,
    pub attempts: i64,
    pub created: Stamp,
    pub outcome: String,
}

#[derive(Template)]
#[template(path = "developers_app.html")]
pub struct AppPage<'a> {
    pub site: Site<'a>,
    pub csrf_token: &'a str,
    pub app: &'a Client,
    /// Where healthgate serves the app's photo.
    pub photo: Option<String>,
    pub issuer: &'a str,
    /// `[smart]` is on: the SMART discovery document is listed.
    pub smart: bool,
    pub scopes: String,
    pub user_types: String,
    pub integrations: Vec<IntegrationLine>,
    pub deliveries: Vec<DeliveryLine>,
    pub webhook_secret: Option<String>,
    pub notice: Option<&'static str>,
    /// What the page says of the app's place in the integration directory.
    pub listing: ListingLine,
    /// Until when the APP_SECRET a rotation replaced keeps working.
    pub previous_secret_until: Option<Stamp>,
    /// How long a replaced APP_SECRET keeps working (`client_secret_grace`),
    /// as people read it; `None`: it ends at once.
    pub grace: Option<String>,
}

#[derive(Deserialize)]
pub struct AppQuery {
    saved: Option<String>,
    /// What the listing buttons just did: `requested` or `withdrawn`.
    listing: Option<String>,
}

/// The app's place in the integration directory, as its developer reads it.
pub struct ListingLine {
    /// `none`, `requested`, `approved` or `rejected`, for the style.
    pub state: &'static str,
    pub text: String,
    /// The operator's reason for a rejection or for taking it out.
    pub reason: Option<String>,
    /// The button the page offers: `(value, label)` of the `listing` field.
    pub action: Option<(&'static str, &'static str)>,
}

impl ListingLine {
    pub fn of(app: &Client) -> Self {
        let l = &app.listing;
        let at = |t: Option<i64>| {
            t.map(format_utc)
                .unwrap_or_else(|| "an earlier version".to_owned())
        };
        let can_ask = app.connect_redirect_url.is_some();
        let ask = |label| can_ask.then_some(("request", label));
        let (text, action) = match l.state {
            ListingState::NotListed if l.was_unlisted() => (
                format!(
                    "The platform's operators took it out of the integration directory on {}. Their reason:",
                    at(l.reviewed_at)
                ),
                ask("Ask to be listed again"),
            ),
            ListingState::NotListed => (
                if can_ask {
                    "Not listed in the integration directory. Ask to be listed: the platform's operators review the app before practice administrators see it.".to_owned()
                } else {
                    "Not listed in the integration directory. To ask to be listed, give the app a connect URL (edit the app).".to_owned()
                },
                ask("Ask to be listed"),
            ),
            ListingState::Requested if l.changed.is_empty() => (
                format!(
                    "Waiting for review since {}: practice administrators see it in the directory once the platform's operators approve it.",
                    at(l.requested_at)
                ),
                Some(("withdraw", "Withdraw the request")),
            ),
            ListingState::Requested => (
                format!(
                    "Back under review since {}, after a change of its {}: it is out of the directory until the platform's operators approve it again.",
                    at(l.requested_at),
                    l.changed
                        .iter()
                        .map(|f| f.label())
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
                Some(("withdraw", "Withdraw the request")),
            ),
            ListingState::Approved => (
                format!(
                    "Listed in the integration directory since {}: practice administrators can connect it. Changing its name, scopes or connect URL sends it back for review.",
                    at(l.reviewed_at)
                ),
                Some(("withdraw", "Take it out of the directory")),
            ),
            ListingState::Rejected => (
                format!(
                    "The platform's operators declined to list it on {}. Their reason:",
                    at(l.reviewed_at)
                ),
                ask("Ask again"),
            ),
        };
        Self {
            state: l.state.as_str(),
            text,
            reason: l.reason.clone(),
            action,
        }
    }
}

/// The event a delivery carries, read from its payload.
fn delivery_event(payload: &str) -> String {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "event".to_owned())
}

/// `GET /developers/apps/{id}`: credentials, settings, integrations and
/// webhook deliveries.
pub async fn show_app(
    State(state): State<AppState>,
    viewer: Viewer,
    SignedIn { session, user }: SignedIn,
    Path(id): Path<String>,
    Query(q): Query<AppQuery>,
) -> Result<Response, PageError> {
    let app = owned_app(&state, &user.id, &id).await?;
    let mut integrations = Vec::new();
    for i in state.store.integrations_of_client(&app.id).await? {
        let organization = state
            .store
            .organization(&i.organization_id)
            .await?
            .map_or_else(|| i.organization_id.clone(), |o| o.name);
        integrations.push(IntegrationLine {
            id: i.id,
            organization,
            status: i.status.as_str(),
            created: Stamp::at(i.created_at),
            activated: i.activated_at.map(Stamp::at),
        });
    }
    let deliveries = state
        .store
        .deliveries(Some(&app.id), 20)
        .await?
        .into_iter()
        .map(|d| DeliveryLine {
            event: delivery_event(&d.payload),
            outcome: match (d.delivered_at, d.last_status, d.last_error) {
                (Some(at), status, _) => format!(
                    "delivered {}{}",
                    format_utc(at),
                    status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
                ),
                (None, Some(status), _) => format!("last answer HTTP {status}"),
                (None, None, Some(error)) => error,
                (None, None, None) => "not sent yet".to_owned(),
            },
            id: d.id,
            status: d.status,
            attempts: d.attempts,
            created: Stamp::at(d.created_at),
        })
        .collect();
    let webhook_secret = match &app.webhook_url {
        Some(_) => Some(
            crate::services::secrets::webhook_secret(&state.store, &state.settings, &app)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "webhook secret unavailable");
                    PageError::bad_request("The webhook signing secret is unavailable.")
                })?,
        ),
        None => None,
    };
    Ok(pages::render(
        StatusCode::OK,
        &AppPage {
            site: viewer.site(&state.settings),
            csrf_token: &session.csrf_token,
            issuer: &state.issuer,
            smart: state.settings.smart.enabled(),
            photo: served_path(&app.id, app.photo_url.as_deref()),
            scopes: app.allowed_scopes.to_string(),
            user_types: app
                .user_types
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            app: &app,
            integrations,
            deliveries,
            webhook_secret,
            notice: match (q.saved.is_some(), q.listing.as_deref()) {
                (true, _) => Some("Your changes were saved."),
                (_, Some("requested")) => Some(
                    "You asked for the app to be listed: the platform's operators will review it.",
                ),
                (_, Some("withdrawn")) => Some("The app is not listed, and no longer asks to be."),
                _ => None,
            },
            listing: ListingLine::of(&app),
            previous_secret_until: app.previous_secret_expires_at(state.now()).map(Stamp::at),
            grace: grace_text(&state),
        },
    ))
}

#[derive(Template)]
#[template(path = "developers_rotate.html")]
pub struct RotatePage<'a> {
    pub site: Site<'a>,
    pub csrf_token: &'a str,
    pub app: &'a Client,
    /// How long the old secret keeps working; `None`: it ends at once.
    pub grace: Option<String>,
    /// Until when a secret replaced by an earlier rotation still works.
    pub previous_secret_until: Option<Stamp>,
}

/// `client_secret_grace` as people read it (`24 hours`), or `None` when a
/// rotation ends the old APP_SECRET at once.
fn grace_text(state: &AppState) -> Option<String> {
    state.settings.client_secret_grace.map(|g| {
        let s = g.secs();
        let (n, unit) = if s % 86_400 == 0 && s != 86_400 {
            (s / 86_400, "day")
        } else if s % 3600 == 0 {
            (s / 3600, "hour")
        } else if s % 60 == 0 {
            (s / 60, "minute")
        } else {
            (s, "second")
        };
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    })
}

/// `GET /developers/apps/{id}/secret`: what rotating the APP_SECRET does,
/// before anything happens.
pub async fn confirm_rotate_secret(
    State(state): State<AppState>,
    viewer: Viewer,
    person: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let app = own_app(&state, &person, &id).await?;
    if app.is_public() {
        return Err(PageError::bad_request(
            "A public app has no APP_SECRET: it uses PKCE instead.",
        ));
    }
    Ok(pages::render(
        StatusCode::OK,
        &RotatePage {
            site: viewer.site(&state.settings),
            csrf_token: &person.session.csrf_token,
            app: &app,
            grace: grace_text(&state),
            previous_secret_until: app.previous_secret_expires_at(state.now()).map(Stamp::at),
        },
    ))
}

/// `POST /developers/apps/{id}/secret`, sent from the confirmation page: a
/// new APP_SECRET, shown once; the old one keeps working for
/// `client_secret_grace` (or stops at once when that is 0).
pub async fn rotate_secret(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ip: ClientIp,
    person: SignedIn,
    _checked: CsrfForm<AppFields>,
) -> Result<Response, PageError> {
    let app = own_app(&state, &person, &id).await?;
    let session = &person.session;
    let secret = admin::rotate_client_secret(
        &state.store,
        state.clock.as_ref(),
        &app.id,
        state.settings.client_secret_grace,
        person.actor(&ip),
    )
    .await?;
    shown_once(&state, session, &app.id, Some(&secret), "rotated").await
}

/// `POST /developers/apps/{id}/webhook-secret`: a new webhook signing
/// secret; deliveries are signed with it from now on.
pub async fn rotate_webhook_secret(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ip: ClientIp,
    person: SignedIn,
    _checked: CsrfForm<AppFields>,
) -> Result<Response, PageError> {
    let app = own_app(&state, &person, &id).await?;
    admin::rotate_webhook_secret(
        &state.store,
        &state.settings,
        state.clock.as_ref(),
        &app.id,
        person.actor(&ip),
    )
    .await?;
    let back = format!("/developers/apps/{}#webhooks", app.id);
    Ok(Redirect::to(&back).into_response())
}

/// `POST /developers/apps/{id}/listing` (`listing` = `request` or
/// `withdraw`): asks for the app to be listed in the integration directory
/// (an operator reviews it), or withdraws the request or the listing.
pub async fn change_listing(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ip: ClientIp,
    person: SignedIn,
    CsrfForm { fields, .. }: CsrfForm<AppFields>,
) -> Result<Response, PageError> {
    let app = own_app(&state, &person, &id).await?;
    let (store, clock, actor) = (&state.store, state.clock.as_ref(), person.actor(&ip));
    let done = match fields.listing.as_deref() {
        Some("request") => {
            admin::request_listing(store, clock, &app.id, actor).await?;
            "requested"
        }
        Some("withdraw") => {
            admin::withdraw_listing(store, clock, &app.id, actor).await?;
            "withdrawn"
        }
        _ => {
            return Err(PageError::bad_request(
                "Choose to ask for the listing or to withdraw it.",
            ));
        }
    };
    let back = with_query_params(
        &format!("/developers/apps/{}", app.id),
        &[("listing", done)],
    );
    Ok(Redirect::to(&format!("{back}#directory")).into_response())
}

#[derive(Template)]
#[template(path = "developers_delete.html")]
pub struct DeletePage<'a> {
    pub site: Site<'a>,
    pub csrf_token: &'a str,
    pub app: &'a Client,
    pub error: Option<&'a str>,
}

/// `GET /developers/apps/{id}/delete`: asks to confirm by typing the name.
pub async fn confirm_delete(
    State(state): State<AppState>,
    viewer: Viewer,
    SignedIn { session, user }: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let app = owned_app(&state, &user.id, &id).await?;
    Ok(pages::render(
        StatusCode::OK,
        &DeletePage {
            site: viewer.site(&state.settings),
            csrf_token: &session.csrf_token,
            app: &app,
            error: None,
        },
    ))
}

/// `POST /developers/apps/{id}/delete` (`confirm_name`): deletes the app
/// with every token, code, consent and integration it had.
pub async fn delete_app(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    ip: ClientIp,
    person: SignedIn,
    CsrfForm { fields, .. }: CsrfForm<AppFields>,
) -> Result<Response, PageError> {
    let app = own_app(&state, &person, &id).await?;
    let session = &person.session;
    if fields.confirm_name.as_deref().map(str::trim) != Some(app.name.as_str()) {
        return Ok(pages::render(
            StatusCode::BAD_REQUEST,
            &DeletePage {
                site: viewer.site(&state.settings),
                csrf_token: &session.csrf_token,
                app: &app,
                error: Some("Type the app's name exactly as shown to delete it."),
            },
        ));
    }
    admin::delete_client(
        &state.store,
        state.clock.as_ref(),
        &app.id,
        person.actor(&ip),
    )
    .await?;
    Ok(Redirect::to("/developers?deleted=1").into_response())
}

/// `GET /apps/{id}/photo`: an app's photo, uploaded or fetched once from
/// the URL it was registered with. Public, as the consent page and the
/// partner's own pages show it.
pub async fn photo(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    match state.store.client_photo(&id).await? {
        Some((kind, bytes)) => {
            let kind = HeaderValue::from_str(&kind)
                .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
            Ok((
                [
                    (header::CONTENT_TYPE, kind),
                    (
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("public, max-age=300"),
                    ),
                ],
                bytes,
            )
                .into_response())
        }
        None => Err(PageError {
            status: StatusCode::NOT_FOUND,
            title: "Page not found",
            message: "This app has no photo.".into(),
        }),
    }
}
