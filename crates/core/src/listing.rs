//! An app's place in the integration directory: asked for, approved or
//! rejected by one of the platform's operators, with the facts of its last
//! request and review. Only an approved app is listed; `review` decides
//! how a listing may move.

use std::fmt;
use std::str::FromStr;

/// Where an app stands with the directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ListingState {
    /// Not listed and not asking to be (never asked, withdrawn, or taken
    /// out by an operator).
    #[default]
    NotListed,
    /// Waiting for an operator's review; not listed meanwhile.
    Requested,
    /// Listed: practice admins see it in the directory.
    Approved,
    /// An operator declined to list it, saying why.
    Rejected,
}

impl ListingState {
    pub const ALL: [ListingState; 4] = [
        Self::NotListed,
        Self::Requested,
        Self::Approved,
        Self::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotListed => "none",
            Self::Requested => "requested",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
        }
    }

    /// Whether the app's developer wants it listed: it is, or it asked.
    pub fn is_wanted(self) -> bool {
        matches!(self, Self::Requested | Self::Approved)
    }
}

impl fmt::Display for ListingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotListed => "not listed",
            Self::Requested => "waiting for review",
            Self::Approved => "listed",
            Self::Rejected => "rejected",
        })
    }
}

impl FromStr for ListingState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| format!("unknown listing state {s:?}"))
    }
}

/// A part of a registration that practice admins rely on when they
/// connect: changing one sends an approved app back for review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReviewedField {
    Name,
    Scopes,
    ConnectUrl,
}

impl ReviewedField {
    pub const ALL: [ReviewedField; 3] = [Self::Name, Self::Scopes, Self::ConnectUrl];

    /// The field as the portal's forms and the CLI name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Scopes => "scope",
            Self::ConnectUrl => "connect_url",
        }
    }

    /// The field as people read it: "its name", "its scopes".
    pub fn label(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Scopes => "scopes",
            Self::ConnectUrl => "connect URL",
        }
    }

    /// The stored form of a list of fields: their names, space-separated.
    pub fn join(fields: &[ReviewedField]) -> String {
        fields
            .iter()
            .map(|f| f.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Reads [`ReviewedField::join`]'s form back; unknown names are errors.
    pub fn split(stored: &str) -> Result<Vec<ReviewedField>, String> {
        stored
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(|s| {
                Self::ALL
                    .into_iter()
                    .find(|f| f.as_str() == s)
                    .ok_or_else(|| format!("unknown reviewed field {s:?}"))
            })
            .collect()
    }
}

/// An app's listing: its state and the facts of its last request and
/// review.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub state: ListingState,
    /// When the request now waiting (or the one approved) was made.
    pub requested_at: Option<i64>,
    /// When an operator last approved, rejected or unlisted it.
    pub reviewed_at: Option<i64>,
    /// Which operator did (their user id); `None` for the command line on
    /// the server, and for apps listed before listings were reviewed.
    pub reviewed_by: Option<String>,
    /// Why an operator rejected it, or took it out of the directory: shown
    /// to the app's developer.
    pub reason: Option<String>,
    /// While it waits for review again: the changes of the approved app
    /// that sent it back. Empty for a first request.
    pub changed: Vec<ReviewedField>,
}

impl Listing {
    /// Listed in the directory (a suspended app is not shown all the
    /// same: see `Client::is_listed`).
    pub fn is_approved(&self) -> bool {
        self.state == ListingState::Approved
    }

    /// Taken out of the directory by an operator (and not asked again).
    pub fn was_unlisted(&self) -> bool {
        self.state == ListingState::NotListed && self.reason.is_some()
    }

    /// A request made at `now`; `changed`: what sent an approved app back.
    pub fn requested(now: i64, changed: Vec<ReviewedField>) -> Self {
        Self {
            state: ListingState::Requested,
            requested_at: Some(now),
            changed,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_fields_read_back_as_written() {
        for s in ListingState::ALL {
            assert_eq!(s.as_str().parse::<ListingState>(), Ok(s));
        }
        assert!("listed".parse::<ListingState>().is_err());
        let all = ReviewedField::ALL.to_vec();
        assert_eq!(ReviewedField::join(&all), "name scope connect_url");
        assert_eq!(ReviewedField::split(&ReviewedField::join(&all)), Ok(all));
        assert_eq!(ReviewedField::split(""), Ok(vec![]));
        assert!(ReviewedField::split("name photo").is_err());
    }
}
