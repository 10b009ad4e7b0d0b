//! SMART for the APIs and the command line: EHR launches, as the platform
//! (acting as the EHR) makes them (`POST /api/v1/smart/launches`, a client
//! registered as a SMART launcher; `healthgate smart launch`), the patients
//! a person may act for, and who they are on the FHIR server (`fhirUser`).

use healthgate_core::redirect::with_query_params;
use healthgate_core::secret::{SecretKind, mint};
use healthgate_core::smart::{
    LAUNCH_TTL, Launch, PatientLink, SmartContext, check_context, check_fhir_user,
    check_patient_link,
};
use healthgate_core::user::User;
use healthgate_store::{Actor, Store};

use crate::config::Settings;
use crate::services::admin::{AdminError, find_user};

/// What a launcher asks for: the app, the person it is for (optional), the
/// FHIR server (`iss`; the first configured when none is named) and the
/// launch context.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LaunchRequest {
    /// The app to launch.
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
            let user = find_user(store, named).await?;
            if !user.is_active() {
                return Err(AdminError::Invalid(format!("{} is locked", user.username)));
            }
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

/// Links a patient to a person (`user`: an id or username), or renames the
/// link, for the standalone launch's picker.
pub async fn link_patient(
    store: &Store,
    now: i64,
    user: &str,
    link: PatientLink,
    actor: Actor<'_>,
) -> Result<User, AdminError> {
    check_patient_link(&link).map_err(AdminError::Invalid)?;
    let user = find_user(store, user).await?;
    if !store.link_patient(&user.id, &link, actor, now).await? {
        return Err(AdminError::Invalid(format!("no account {:?}", user.id)));
    }
    Ok(user)
}

/// Unlinks a patient from a person; an error when it was not linked.
pub async fn unlink_patient(
    store: &Store,
    now: i64,
    user: &str,
    patient_id: &str,
    actor: Actor<'_>,
) -> Result<User, AdminError> {
    let user = find_user(store, user).await?;
    if !store
        .unlink_patient(&user.id, patient_id, actor, now)
        .await?
    {
        return Err(AdminError::Invalid(format!(
            "patient {patient_id:?} is not linked to {}",
            user.username
        )));
    }
    Ok(user)
}

/// Sets who a person is on the FHIR server (`Practitioner/123`; empty or
/// `None` clears it): the `fhirUser` of their SMART ID tokens.
pub async fn set_fhir_user(
    store: &Store,
    now: i64,
    user: &str,
    fhir_user: Option<&str>,
    actor: Actor<'_>,
) -> Result<User, AdminError> {
    let fhir_user = fhir_user.filter(|f| !f.trim().is_empty());
    if let Some(reference) = fhir_user {
        check_fhir_user(reference).map_err(AdminError::Invalid)?;
    }
    let mut user = find_user(store, user).await?;
    if !store.set_fhir_user(&user.id, fhir_user, actor, now).await? {
        return Err(AdminError::Invalid(format!("no account {:?}", user.id)));
    }
    user.fhir_user = fhir_user.map(str::to_owned);
    Ok(user)
}
