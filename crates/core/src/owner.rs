//! Who a grant speaks for (Fullscript's `resource_owner`), and who may make
//! it: a person for themselves (role-based, the default), or an
//! organization admin for the whole organization (clinic-level, as apps
//! registered before Fullscript's role-based access do).

use std::fmt;
use std::str::FromStr;

use crate::org::OrganizationKind;
use crate::scope::ScopeSet;
use crate::user::UserType;

/// A client's authorization level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthorizationLevel {
    /// Every person authorizes for themselves, within what their role allows.
    #[default]
    User,
    /// Only an organization admin authorizes, and the grant stands for the
    /// organization.
    Organization,
}

impl AuthorizationLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Organization => "organization",
        }
    }
}

impl fmt::Display for AuthorizationLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuthorizationLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Self::User),
            "organization" => Ok(Self::Organization),
            other => Err(format!(
                "unknown authorization level {other:?}: expected user or organization"
            )),
        }
    }
}

/// The party a token speaks for: `{id, type}` in token responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceOwner {
    pub id: String,
    /// `Practitioner`, `Staff`, `Member`, `Expert`, `Clinic` or `Practice`
    /// (or a configured role's type).
    pub kind: String,
}

impl ResourceOwner {
    /// A person acting outside any organization: their user type.
    pub fn person(user_id: &str, user_type: UserType) -> Self {
        Self {
            id: user_id.to_owned(),
            kind: match user_type {
                UserType::Member => "Member",
                UserType::Expert => "Expert",
            }
            .to_owned(),
        }
    }

    /// A person acting in an organization under a role whose owner type is `kind`.
    pub fn in_role(user_id: &str, kind: &str) -> Self {
        Self {
            id: user_id.to_owned(),
            kind: kind.to_owned(),
        }
    }

    /// An organization-level grant.
    pub fn organization(org_id: &str, kind: OrganizationKind) -> Self {
        Self {
            id: org_id.to_owned(),
            kind: match kind {
                OrganizationKind::Clinic => "Clinic",
                OrganizationKind::Practice => "Practice",
            }
            .to_owned(),
        }
    }
}

/// What a role may grant, and the owner type its grants carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolePolicy {
    pub scopes: ScopeSet,
    pub owner_type: String,
}

/// The scopes a person with `policy` can grant of those `requested`
/// (RFC 6749 §3.3: the server may issue fewer than requested, and says so
/// in the token's `scope`), and those it cannot. A SMART clinical scope
/// within one of the policy's (`patient/*.cruds` covers
/// `patient/Observation.rs`) can be granted.
pub fn grantable(requested: &ScopeSet, policy: &RolePolicy) -> (ScopeSet, Vec<String>) {
    let mut allowed = Vec::new();
    let mut refused = Vec::new();
    for s in requested.iter() {
        if crate::smart::within(s, policy.scopes.iter()) {
            allowed.push(s.to_owned());
        } else {
            refused.push(s.to_owned());
        }
    }
    (ScopeSet::from_tokens(&allowed).unwrap_or_default(), refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staff_gets_the_rest_but_not_a_practitioner_only_scope() {
        let staff = RolePolicy {
            scopes: ScopeSet::parse("profile_read profile_write").unwrap(),
            owner_type: "Staff".into(),
        };
        let (granted, refused) = grantable(&ScopeSet::parse("profile_read pay").unwrap(), &staff);
        assert_eq!(granted.to_string(), "profile_read");
        assert_eq!(refused, vec!["pay".to_owned()]);
    }

    #[test]
    fn owners() {
        assert_eq!(
            ResourceOwner::person("usr-1", UserType::Expert).kind,
            "Expert"
        );
        assert_eq!(
            ResourceOwner::organization("cln-1", OrganizationKind::Clinic).kind,
            "Clinic"
        );
        assert_eq!(
            "organization".parse::<AuthorizationLevel>().unwrap(),
            AuthorizationLevel::Organization
        );
        assert!("team".parse::<AuthorizationLevel>().is_err());
    }
}
