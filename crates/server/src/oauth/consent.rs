//! Who may authorize an app, and for what (Fullscript's role-based access
//! and clinic-level authorization): the ways a person can authorize a
//! request, each with the organization it is for, the owner the tokens speak
//! for, and the scopes the person's role lets them grant.

use healthgate_core::client::Client;
use healthgate_core::org::{ADMIN, Organization};
use healthgate_core::owner::{AuthorizationLevel, ResourceOwner, grantable};
use healthgate_core::scope::ScopeSet;
use healthgate_core::token::GrantContext;
use healthgate_core::user::User;
use healthgate_store::StoreError;

use crate::state::AppState;

/// One way the person may authorize the request.
#[derive(Debug, Clone)]
pub struct Choice {
    /// `None` when the person acts for themselves outside any organization.
    pub organization: Option<Organization>,
    pub role: Option<String>,
    pub owner: ResourceOwner,
    pub organization_level: bool,
    /// What this choice grants: the requested scopes the role allows.
    pub scope: ScopeSet,
    /// Requested scopes the role does not allow.
    pub refused: Vec<String>,
}

impl Choice {
    pub fn organization_id(&self) -> Option<&str> {
        self.organization.as_ref().map(|o| o.id.as_str())
    }

    pub fn grant(&self) -> GrantContext {
        GrantContext {
            organization_id: self.organization_id().map(str::to_owned),
            owner: Some(self.owner.clone()),
            organization_level: self.organization_level,
            smart: None,
        }
    }
}

/// The choices `user` has for `client` asking `requested`. Empty means the
/// person may not authorize the app at all (an organization-level app and
/// no organization they administer).
pub async fn choices(
    state: &AppState,
    client: &Client,
    user: &User,
    requested: &ScopeSet,
) -> Result<Vec<Choice>, StoreError> {
    let memberships = state.store.memberships(&user.id).await?;
    let out = match client.authorization_level {
        AuthorizationLevel::Organization => memberships
            .into_iter()
            .filter(|(_, role)| role == ADMIN)
            .map(|(org, role)| Choice {
                owner: ResourceOwner::organization(&org.id, org.kind),
                organization: Some(org),
                role: Some(role),
                organization_level: true,
                scope: requested.clone(),
                refused: Vec::new(),
            })
            .collect(),
        AuthorizationLevel::User if memberships.is_empty() => vec![Choice {
            organization: None,
            role: None,
            owner: ResourceOwner::person(&user.id, user.user_type),
            organization_level: false,
            scope: requested.clone(),
            refused: Vec::new(),
        }],
        AuthorizationLevel::User => memberships
            .into_iter()
            .map(|(org, role)| {
                let policy = state.settings.role_policy(&role);
                let (scope, refused) = grantable(requested, &policy);
                Choice {
                    owner: ResourceOwner::in_role(&user.id, &policy.owner_type),
                    organization: Some(org),
                    role: Some(role),
                    organization_level: false,
                    scope,
                    refused,
                }
            })
            .collect(),
    };
    Ok(out)
}
