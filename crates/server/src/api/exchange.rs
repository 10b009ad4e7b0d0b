//! `POST /api/oauth/tokens`: the partner exchanges a connect code for the
//! practice's API key (Hint's InstantOn step 3).
//!
//! The response is Hint's: `id` (`int-…`), `status`, `token_type`,
//! `access_token` (the practice API key), `practice {id, name}`,
//! `activated_by {id, name, email}`, `created_at`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use healthgate_core::error::{ErrorCode, OAuthError};
use healthgate_core::integration::{ConnectDecision, ConnectExchange, exchange_connect_code};
use healthgate_core::secret::{self, SecretKind, mint};
use healthgate_store::{Applied, StoreError};

use crate::api::integrations::integration_json;
use crate::http::error::{ApiError, no_store};
use crate::http::ip::ClientIp;
use crate::oauth::client_auth::authenticate_partner;
use crate::oauth::params::Params;
use crate::services::throttle;
use crate::state::AppState;

fn parse_bool(name: &str, v: Option<&str>) -> Result<bool, OAuthError> {
    match v {
        None => Ok(true),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(_) => Err(OAuthError::invalid_request(format!(
            "{name} must be true or false"
        ))),
    }
}

/// The partner's exchange of a connect code (Hint's InstantOn step 3).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the parameters `Params` reads.
pub struct ConnectCodeExchange {
    /// The connect code the practice's browser brought.
    code: String,
    /// If sent, `authorization_code`.
    grant_type: Option<String>,
    /// `false` leaves the integration pending until the partner activates
    /// it; `true` by default.
    activate: Option<bool>,
}

/// The integration and the practice's API key, shown once.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `post` answers.
pub struct Connected {
    #[serde(flatten)]
    integration: crate::api::integrations::IntegrationDoc,
    /// `bearer`.
    token_type: String,
    /// The practice API key.
    access_token: String,
}

/// Exchange a connect code for the practice's API key.
#[utoipa::path(
    post,
    path = "/api/oauth/tokens",
    operation_id = "exchangeConnectCode",
    tag = "integrations",
    request_body(content(
        (ConnectCodeExchange = "application/json"),
        (ConnectCodeExchange = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "Connected (or pending, with `activate=false`).", body = Connected),
        (status = 400, description = "`invalid_request`, `invalid_grant` (an unknown, used or expired code) or `unsupported_grant_type`.", body = crate::http::error::ErrorBody),
        (status = 401, description = "`invalid_client`: the partner did not authenticate.", body = crate::http::error::ErrorBody),
    ),
    security(("client_basic" = []), ("client_secret_bearer" = [])),
)]
pub async fn post(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = Params::from_body(&headers, &body)?;
    let partner = authenticate_partner(&state, &headers, &ip).await?;
    if let Some(gt) = params.get("grant_type")
        && gt != "authorization_code"
    {
        return Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            "this endpoint exchanges connect codes: grant_type, if sent, must be authorization_code",
        )
        .into());
    }
    let code = params.require("code")?;
    let activate = parse_bool("activate", params.get("activate"))?;
    let key = mint(SecretKind::ApiKey);
    let request = ConnectExchange {
        code_digest: &secret::digest(code),
        client_id: &partner.id,
        activate,
        now: state.now(),
    };
    let integration = loop {
        let read = state
            .store
            .connect_code_for_exchange(request.code_digest)
            .await?;
        let ConnectDecision { write, outcome } =
            exchange_connect_code(read.as_ref(), request, &key);
        if state.store.apply_connect(&write).await? == Applied::Stale {
            // Used or killed since it was read: decide again on what is
            // there now.
            continue;
        }
        if let Err(e) = outcome {
            // A guessed connect code counts against the partner, as a
            // guessed authorization code does.
            throttle::client_failed(&state, &partner.id, ip.as_deref()).await?;
            return Err(e.into());
        }
        let id = read.map(|r| r.integration.id).unwrap_or_default();
        break state
            .store
            .integration(&id)
            .await?
            .ok_or(StoreError::Corrupt("integration vanished".into()))?;
    };
    let mut body = integration_json(&state, &integration).await?;
    body["token_type"] = "bearer".into();
    body["access_token"] = key.value.into();
    body["created_at"] = request.now.into();
    let mut response = Json(body).into_response();
    no_store(&mut response);
    Ok(response)
}
