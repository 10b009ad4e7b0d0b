//! Organizations (practices and clinics) and the roles people hold in them.

use std::fmt;
use std::str::FromStr;

/// Hint's practices and Fullscript's clinics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrganizationKind {
    Practice,
    Clinic,
}

impl OrganizationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Practice => "practice",
            Self::Clinic => "clinic",
        }
    }

    /// The typed id prefix: `pra-…` (as Hint's ids) or `cln-…`.
    pub fn id_prefix(self) -> &'static str {
        match self {
            Self::Practice => "pra",
            Self::Clinic => "cln",
        }
    }
}

impl fmt::Display for OrganizationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrganizationKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "practice" => Ok(Self::Practice),
            "clinic" => Ok(Self::Clinic),
            other => Err(format!(
                "unknown organization kind {other:?}: expected practice or clinic"
            )),
        }
    }
}

/// An organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    pub id: String,
    pub name: String,
    pub kind: OrganizationKind,
    pub created_at: i64,
}

/// The role that may connect integrations, authorize organization-level
/// apps and manage the organization. Other roles come from configuration.
pub const ADMIN: &str = "admin";

/// Checks `role` against the configured roles.
pub fn validate_role<'a>(
    role: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Result<(), String> {
    let known: Vec<&str> = known.into_iter().collect();
    if known.contains(&role) {
        Ok(())
    } else {
        Err(format!(
            "unknown role {role:?}: expected one of {}",
            known.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_roles() {
        assert_eq!(
            "clinic".parse::<OrganizationKind>().unwrap().id_prefix(),
            "cln"
        );
        assert!("hospital".parse::<OrganizationKind>().is_err());
        let roles = ["admin", "practitioner", "staff"];
        assert!(validate_role("staff", roles).is_ok());
        assert!(validate_role("owner", roles).is_err());
    }
}
