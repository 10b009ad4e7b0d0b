//! `serve --demo`: a practice with a practitioner, a staff member and a
//! member, and a demo partner app whose redirect URI is a page of this server
//! (`/demo/callback`) that shows the code and how to exchange it. The
//! practice's admin is also one of the platform's operators, so the demo
//! shows the admin console (`/admin`) too. With `[smart]` on, a demo SMART
//! app too (launched at `/demo/smart-launch`, which asks for authorization
//! as the app would), the practitioner with a `fhirUser` and two linked
//! patients, an EHR launch and a standalone launch to open.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use healthgate_core::Clock;
use healthgate_core::client::{Client, ClientKind};
use healthgate_core::listing::{Listing, ListingState};
use healthgate_core::org::{Organization, OrganizationKind};
use healthgate_core::redirect::{RedirectUri, with_query_params};
use healthgate_core::scope::ScopeSet;
use healthgate_core::secret::{SecretKind, mint, new_id};
use healthgate_core::user::UserType;
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::http::extract::Viewer;
use crate::http::pages::{self, DemoCallbackPage};
use crate::services::admin::{AdminError, Creator, NewUser, create_user};
use crate::services::passwords;
use crate::state::AppState;
use healthgate_store::{Actor, Store};

pub const DEMO_CLIENT_ID: &str = "app-demo";
pub const DEMO_SMART_CLIENT_ID: &str = "app-demo-smart";
const DEMO_SMART_SCOPE: &str = "openid fhirUser launch launch/patient patient/*.rs offline_access";
const DEMO_PATIENTS: [(&str, &str); 2] = [("pat-1", "Jamie Rivera"), ("pat-2", "Alex Chen")];
const DEMO_PRACTICE: &str = "Demo Family Practice";

#[derive(Debug, Serialize)]
pub struct DemoAccount {
    pub role: &'static str,
    pub username: String,
    pub password: String,
    pub user_type: &'static str,
    /// One of the platform's operators: may open the admin console.
    pub operator: bool,
}

#[derive(Debug, Serialize)]
pub struct DemoSeed {
    pub practice_id: String,
    pub practice_name: &'static str,
    pub accounts: Vec<DemoAccount>,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    pub authorize_url: String,
    /// With `[smart]` on: the demo SMART app and how to launch it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smart: Option<DemoSmart>,
}

#[derive(Debug, Serialize)]
pub struct DemoSmart {
    pub client_id: String,
    pub client_secret: String,
    /// An EHR launch for the practitioner with the first patient (valid five
    /// minutes, once; `healthgate smart launch` makes more).
    pub ehr_launch_url: String,
    /// A standalone launch: the practitioner picks one of two patients.
    pub standalone_url: String,
}

/// The SMART demo app's redirect URI: the demo callback page, told which
/// app it serves.
fn smart_redirect_uri(issuer: &str) -> String {
    format!("{issuer}/demo/callback?app=smart")
}

/// Seeds the demo SMART app (registered afresh, so its secret is new), the
/// practitioner's `fhirUser` and patients, and one EHR launch.
async fn seed_smart(
    store: &Store,
    settings: &Settings,
    now: i64,
    practitioner: &str,
    fhir_base: &str,
) -> Result<DemoSmart, AdminError> {
    let issuer = settings.issuer();
    if store.client(DEMO_SMART_CLIENT_ID).await?.is_some() {
        store
            .delete_client(DEMO_SMART_CLIENT_ID, Actor::system(), now)
            .await?;
    }
    let secret = mint(SecretKind::ClientSecret);
    let redirect_uri = smart_redirect_uri(&issuer);
    let uri = RedirectUri::parse(&redirect_uri)
        .map_err(|e| AdminError::Invalid(format!("demo redirect URI {redirect_uri}: {e}")))?;
    let scopes =
        ScopeSet::parse(DEMO_SMART_SCOPE).map_err(|e| AdminError::Invalid(e.to_string()))?;
    store
        .insert_client(&Client {
            redirect_uris: vec![uri],
            allowed_scopes: scopes,
            secret_digest: Some(secret.digest.clone()),
            description: Some(
                "A SMART on FHIR app for trying EHR and standalone launches.".to_owned(),
            ),
            launch_url: Some(format!("{issuer}/demo/smart-launch")),
            ..Client::new(
                DEMO_SMART_CLIENT_ID,
                "Demo SMART App",
                ClientKind::Confidential,
                now,
            )
        })
        .await?;
    let user = store
        .user_by_username(practitioner)
        .await?
        .ok_or_else(|| AdminError::Invalid(format!("no demo account {practitioner}")))?;
    crate::services::smart::set_fhir_user(
        store,
        now,
        &user.id,
        Some("Practitioner/dr-demo"),
        Actor::system(),
    )
    .await?;
    for (id, display) in DEMO_PATIENTS {
        let link = healthgate_core::smart::PatientLink {
            patient_id: id.to_owned(),
            display: display.to_owned(),
        };
        crate::services::smart::link_patient(store, now, &user.id, link, Actor::system()).await?;
    }
    let launch = crate::services::smart::create_launch(
        store,
        settings,
        now,
        "demo",
        Actor::system(),
        crate::services::smart::LaunchRequest {
            client_id: DEMO_SMART_CLIENT_ID.to_owned(),
            user: Some(practitioner.to_owned()),
            patient: Some(DEMO_PATIENTS[0].0.to_owned()),
            ..Default::default()
        },
    )
    .await?;
    let standalone_url = with_query_params(
        &format!("{issuer}/oauth/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", DEMO_SMART_CLIENT_ID),
            ("redirect_uri", &redirect_uri),
            ("scope", "openid fhirUser launch/patient patient/*.rs"),
            ("aud", fhir_base),
            ("state", "demo"),
        ],
    );
    Ok(DemoSmart {
        client_id: DEMO_SMART_CLIENT_ID.to_owned(),
        client_secret: secret.value,
        ehr_launch_url: launch.launch_url,
        standalone_url,
    })
}

fn random_password() -> String {
    // 24 characters from a minted secret's random part: easy to copy, strong.
    // The accounts are created under the rule people meet, so one whose
    // fingerprint happens to be a common password's (about 1 in 500,000)
    // is drawn again rather than refused.
    loop {
        let password =
            mint(SecretKind::Csrf).value[SecretKind::Csrf.prefix().len()..][..24].to_owned();
        if !healthgate_core::common_passwords::is_common(&password) {
            return password;
        }
    }
}

/// Seeds (or refreshes) the demo data. Re-running it keeps the ids and gives
/// every demo account and the demo app fresh credentials, since secrets are
/// only ever shown once.
pub async fn seed(
    store: &Store,
    settings: &Settings,
    clock: &dyn Clock,
) -> Result<DemoSeed, AdminError> {
    let now = clock.now();
    let issuer = settings.issuer();
    let practice_id = match store.organization_by_name(DEMO_PRACTICE).await? {
        Some(id) => id,
        None => {
            let org = Organization {
                id: new_id(OrganizationKind::Practice.id_prefix()),
                name: DEMO_PRACTICE.to_owned(),
                kind: OrganizationKind::Practice,
                created_at: now,
            };
            store.insert_organization(&org).await?;
            org.id
        }
    };
    let people: [(&'static str, &str, &str, UserType); 4] = [
        ("admin", "admin.demo", "Avery Admin", UserType::Member),
        ("practitioner", "dr.demo", "Dr. Dana Demo", UserType::Expert),
        ("staff", "staff.demo", "Sam Staff", UserType::Member),
        ("member", "member.demo", "Morgan Member", UserType::Member),
    ];
    let mut accounts = Vec::new();
    for (role, username, name, user_type) in people {
        let password = random_password();
        let user = match store.user_by_username(username).await? {
            Some(u) => {
                store
                    .set_password(&u.id, &passwords::hash(password.clone()).await?, now)
                    .await?;
                u
            }
            None => {
                create_user(
                    store,
                    clock,
                    NewUser {
                        username: username.to_owned(),
                        name: Some(name.to_owned()),
                        password: Some(password.clone()),
                        email: Some(format!("{username}@example.org")),
                        user_type,
                    },
                    Creator::By(Actor::system()),
                )
                .await?
            }
        };
        if role != "member" {
            store
                .set_membership(&practice_id, &user.id, role, None, now)
                .await?;
        }
        if role == "admin" {
            store
                .set_operator(&user.id, true, healthgate_store::Actor::system(), now)
                .await?;
        }
        accounts.push(DemoAccount {
            role,
            username: username.to_owned(),
            password,
            user_type: user_type.as_str(),
            operator: role == "admin",
        });
    }

    let redirect_uri = format!("{issuer}/demo/callback");
    let secret = mint(SecretKind::ClientSecret);
    match store.client(DEMO_CLIENT_ID).await? {
        Some(existing)
            if existing
                .redirect_uris
                .iter()
                .any(|r| r.as_str() == redirect_uri) =>
        {
            store
                .set_client_secret(DEMO_CLIENT_ID, &secret.digest, None, Actor::system(), now)
                .await?;
        }
        existing => {
            if existing.is_some() {
                // The issuer changed since the last demo: register afresh.
                store
                    .delete_client(DEMO_CLIENT_ID, Actor::system(), now)
                    .await?;
            }
            let uri = RedirectUri::parse(&redirect_uri).map_err(|e| {
                AdminError::Invalid(format!("demo redirect URI {redirect_uri}: {e}"))
            })?;
            let scopes: Vec<&str> = ["profile_read", "profile_write"]
                .into_iter()
                .filter(|s| settings.scopes.contains_key(*s))
                .collect();
            let allowed = if scopes.is_empty() {
                ScopeSet::from_tokens(settings.scopes.keys())
                    .map_err(|e| AdminError::Invalid(e.to_string()))?
            } else {
                ScopeSet::from_tokens(&scopes).map_err(|e| AdminError::Invalid(e.to_string()))?
            };
            store
                .insert_client(&Client {
                    redirect_uris: vec![uri],
                    allowed_scopes: allowed,
                    secret_digest: Some(secret.digest.clone()),
                    description: Some(
                        "A partner app for trying healthgate: sign in with it, or connect the practice to it."
                            .to_owned(),
                    ),
                    connect_redirect_url: Some(format!("{issuer}/demo/connect?code=")),
                    // Listed at once, as approved by the server itself:
                    // `client.listing_approved` is written with the app.
                    listing: Listing {
                        state: ListingState::Approved,
                        requested_at: Some(now),
                        reviewed_at: Some(now),
                        ..Listing::default()
                    },
                    ..Client::new(DEMO_CLIENT_ID, "Demo Partner App", ClientKind::Confidential, now)
                })
                .await?;
        }
    }
    let client = store
        .client(DEMO_CLIENT_ID)
        .await?
        .ok_or_else(|| AdminError::NoSuchClient(DEMO_CLIENT_ID.into()))?;
    let authorize_url = with_query_params(
        &format!("{issuer}/oauth/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", DEMO_CLIENT_ID),
            ("redirect_uri", &redirect_uri),
            ("scope", &client.allowed_scopes.to_string()),
            ("state", "demo"),
        ],
    );
    let smart = match settings.smart.fhir_base_urls.first() {
        Some(base) => Some(seed_smart(store, settings, now, "dr.demo", base.as_str()).await?),
        None => None,
    };
    Ok(DemoSeed {
        practice_id,
        practice_name: DEMO_PRACTICE,
        accounts,
        client_id: DEMO_CLIENT_ID.to_owned(),
        client_secret: secret.value,
        redirect_uri,
        authorize_url,
        smart,
    })
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    /// `smart` for the demo SMART app.
    app: Option<String>,
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    iss: Option<String>,
}

/// The demo app's redirect target.
pub async fn callback(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let (client_id, redirect_uri) = match q.app.as_deref() {
        Some("smart") => (DEMO_SMART_CLIENT_ID, smart_redirect_uri(&state.issuer)),
        _ => (DEMO_CLIENT_ID, format!("{}/demo/callback", state.issuer)),
    };
    let token_endpoint = format!("{}/oauth/token", state.issuer);
    pages::render(
        StatusCode::OK,
        &DemoCallbackPage {
            site: viewer.site(&state.settings),
            code: q.code.as_deref(),
            state: q.state.as_deref(),
            error: q.error.as_deref(),
            error_description: q.error_description.as_deref(),
            iss: q.iss.as_deref(),
            client_id,
            redirect_uri: &redirect_uri,
            token_endpoint: &token_endpoint,
        },
    )
}

#[derive(Deserialize)]
pub struct ConnectQuery {
    code: Option<String>,
}

/// The demo app's connect URL: healthgate appends the connect code to it.
pub async fn connect(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<ConnectQuery>,
) -> Response {
    let exchange_url = format!("{}/api/oauth/tokens", state.issuer);
    pages::render(
        StatusCode::OK,
        &pages::DemoConnectPage {
            site: viewer.site(&state.settings),
            code: q.code.as_deref(),
            exchange_url: &exchange_url,
        },
    )
}

#[derive(Deserialize)]
pub struct SmartLaunchQuery {
    iss: Option<String>,
    launch: Option<String>,
}

/// The demo SMART app's launch URL: opened by an EHR launch with `iss` and
/// `launch`, it asks for authorization as a SMART app does (`aud` the
/// `iss`, the `launch` scope and value).
pub async fn smart_launch(
    State(state): State<AppState>,
    Query(q): Query<SmartLaunchQuery>,
) -> Response {
    let (Some(iss), Some(launch)) = (q.iss, q.launch) else {
        return crate::http::error::PageError::bad_request(
            "The demo SMART app is opened by an EHR launch, with iss and launch.",
        )
        .into_response();
    };
    let redirect_uri = smart_redirect_uri(&state.issuer);
    let to = with_query_params(
        &format!("{}/oauth/authorize", state.issuer),
        &[
            ("response_type", "code"),
            ("client_id", DEMO_SMART_CLIENT_ID),
            ("redirect_uri", &redirect_uri),
            ("scope", "launch openid fhirUser patient/*.rs"),
            ("aud", &iss),
            ("launch", &launch),
            ("state", "demo"),
        ],
    );
    axum::response::Redirect::to(&to).into_response()
}
