//! SMART EHR launches, as the platform (acting as the EHR) makes them: by
//! the partner API (`POST /api/v1/smart/launches`, a client registered as a
//! SMART launcher) and by the command line (`healthgate smart launch`).

use healthgate_core::redirect::with_query_params;
use healthgate_core::secret::{SecretKind, mint};
use healthgate_core::smart::{LAUNCH_TTL, Launch, SmartContext, check_context};
use healthgate_core::user::User;
use healthgate_store::{Actor, Store};

use crate::config::Settings;
use crate::services::admin::AdminError;

/// What a launcher asks for: the app, the person it is for (optional), the
/// FHIR server (`iss`; the first configured when none is named) and the
/// launch context.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchRequest {
    pub client_id: String,
    /// The person's username or id.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub patient: Option<String>,
    #[serde(default)]
    pub encounter: Option<String>,
    #[serde(default, rename = "fhirContext")]
    pub fhir_context: Vec<serde_json::Value>,
    #[serde(default)]
    pub need_patient_banner: Option<bool>,
    #[serde(default)]
    pub smart_style_url: Option<String>,
    #[serde(default)]
    pub intent: Option<String>,
    #[serde(default)]
    pub tenant: Option<String>,
}

/// A launch made: the value, and the app's launch URL that carries it.
#[derive(Debug, Clone)]
pub struct MadeLaunch {
    pub launch: String,
    pub launch_url: String,
    pub expires_at: i64,
}

/// The person a launch names: by username, else by id; an account that is
/// locked or gone is refused.
async fn person(store: &Store, named: &str) -> Result<User, AdminError> {
    let found = match store.user_by_username(named).await? {
        Some(u) => Some(u),
        None => store.user(named).await?,
    };
    found
        .filter(User::is_active)
        .ok_or_else(|| AdminError::Invalid(format!("no active account {named:?}")))
}

/// Makes an EHR launch of `req.client_id` on behalf of `launcher` (a
/// client id, or `cli` for the command line), after checking that SMART is
/// on, that the app can be launched (registered with the `launch` scope
/// and a launch URL, not suspended), the person, the FHIR server and the
/// context. Kept by digest; the value exists only in the answer.
pub async fn create_launch(
    store: &Store,
    settings: &Settings,
    now: i64,
    launcher: &str,
    actor: Actor<'_>,
    req: LaunchRequest,
) -> Result<MadeLaunch, AdminError> {
    let bases = &settings.smart.fhir_base_urls;
    let Some(first) = bases.first() else {
        return Err(AdminError::Invalid(
            "SMART is off: name the FHIR servers in [smart] fhir_base_urls".into(),
        ));
    };
    let app = store
        .client(&req.client_id)
        .await?
        .ok_or_else(|| AdminError::NoSuchClient(req.client_id.clone()))?;
    if app.suspended_at.is_some() {
        return Err(AdminError::Invalid(format!("{} is suspended", app.id)));
    }
    let Some(launch_url) = app.launch_url.as_deref() else {
        return Err(AdminError::Invalid(format!(
            "{} has no launch URL (client update {} --launch-url URL)",
            app.id, app.id
        )));
    };
    if !app.allowed_scopes.contains("launch") {
        return Err(AdminError::Invalid(format!(
            "{} is not registered with the launch scope",
            app.id
        )));
    }
    let iss = match req.iss.as_deref() {
        None => first.as_str(),
        Some(named) => bases
            .iter()
            .map(|b| b.as_str())
            .find(|b| *b == named.trim_end_matches('/'))
            .ok_or_else(|| {
                AdminError::Invalid(format!(
                    "iss {named:?} is not one of the FHIR servers in [smart] fhir_base_urls"
                ))
            })?,
    };
    let user_id = match req.user.as_deref() {
        Some(named) => {
            let user = person(store, named).await?;
            if !app.serves(user.user_type) {
                return Err(AdminError::Invalid(format!(
                    "{} is not available to {} accounts",
                    app.id, user.user_type
                )));
            }
            Some(user.id)
        }
        None => None,
    };
    let context = SmartContext {
        patient: req.patient,
        encounter: req.encounter,
        fhir_context: req.fhir_context,
        need_patient_banner: req.need_patient_banner,
        smart_style_url: req.smart_style_url,
        intent: req.intent,
        tenant: req.tenant,
        ..SmartContext::for_server(iss)
    };
    check_context(&context).map_err(AdminError::Invalid)?;
    let value = mint(SecretKind::SmartLaunch);
    let launch = Launch {
        client_id: app.id.clone(),
        user_id,
        context,
        created_by: launcher.to_owned(),
        created_at: now,
        expires_at: now + LAUNCH_TTL,
        consumed_at: None,
    };
    store
        .insert_smart_launch(&value.digest, &launch, actor)
        .await?;
    Ok(MadeLaunch {
        launch_url: with_query_params(launch_url, &[("iss", iss), ("launch", &value.value)]),
        launch: value.value,
        expires_at: launch.expires_at,
    })
}
