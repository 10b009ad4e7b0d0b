//! Practice integrations (Hint's InstantOn): a practice connects a partner
//! app from inside the platform; the partner exchanges a one-time connect
//! code for the practice's API key.

use std::fmt;
use std::str::FromStr;

/// Where an integration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrationStatus {
    /// Connect was clicked (or a code issued); no key yet, or the partner
    /// asked to activate later.
    Pending,
    Connected,
    Disconnected,
}

impl IntegrationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
        }
    }
}

impl fmt::Display for IntegrationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IntegrationStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "connected" => Ok(Self::Connected),
            "disconnected" => Ok(Self::Disconnected),
            other => Err(format!("unknown integration status {other:?}")),
        }
    }
}

/// An integration between one practice and one partner app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integration {
    pub id: String,
    pub organization_id: String,
    pub client_id: String,
    pub status: IntegrationStatus,
    pub created_by: Option<String>,
    pub activated_by: Option<String>,
    pub created_at: i64,
    pub activated_at: Option<i64>,
    pub disconnected_at: Option<i64>,
}

/// How a connect code reaches the partner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectMode {
    /// Appended to the partner's connect URL (InstantOn).
    Redirect,
    /// Shown once to the admin, who sends it to the partner.
    Manual,
}

impl ConnectMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redirect => "redirect",
            Self::Manual => "manual",
        }
    }
}

/// The URL the admin's browser is sent to after Connect. Hint: "we just put
/// the authorization code immediately after your url"; a `{code}` in the URL
/// is replaced instead, for partners who want the code elsewhere.
pub fn connect_url(template: &str, code: &str) -> String {
    if template.contains("{code}") {
        template.replace("{code}", code)
    } else {
        format!("{template}{code}")
    }
}

/// A practice API key as stored (the key itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub integration_id: String,
    pub organization_id: String,
    pub client_id: String,
    pub description: Option<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_goes_right_after_the_url_or_into_the_placeholder() {
        assert_eq!(
            connect_url("https://partner.example/hint/connect?code=", "hg_cc_x"),
            "https://partner.example/hint/connect?code=hg_cc_x"
        );
        assert_eq!(
            connect_url("https://partner.example/connect/", "abc"),
            "https://partner.example/connect/abc"
        );
        assert_eq!(
            connect_url("https://partner.example/c/{code}/start", "abc"),
            "https://partner.example/c/abc/start"
        );
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            IntegrationStatus::Pending,
            IntegrationStatus::Connected,
            IntegrationStatus::Disconnected,
        ] {
            assert_eq!(s.as_str().parse::<IntegrationStatus>().unwrap(), s);
        }
    }
}
