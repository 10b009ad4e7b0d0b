//! The console's decisions about an app that ask first, on a page of their
//! own, for the reason the audit log keeps: suspending an app
//! (`/admin/apps/suspend`), rejecting its directory request and taking it
//! out of the directory (`/admin/directory/reject`, `…/unlist`). One page,
//! one check of the reason (`core::client::Reason`), worded per decision.

use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;
use healthgate_core::client::{REASON_MAX, Reason, ReasonError};

use super::Operator;
use crate::http::extract::Viewer;
use crate::http::forms::FieldErrors;
use crate::http::pages::{self, Site};
use crate::state::AppState;

/// Which decision a reason is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonFor {
    Suspend,
    Reject,
    Unlist,
}

impl ReasonFor {
    /// For element ids: `suspend-heading`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Suspend => "suspend",
            Self::Reject => "reject",
            Self::Unlist => "unlist",
        }
    }

    /// Where the form is sent.
    pub fn action(self) -> &'static str {
        match self {
            Self::Suspend => "/admin/apps/suspend",
            Self::Reject => "/admin/directory/reject",
            Self::Unlist => "/admin/directory/unlist",
        }
    }

    /// The page Cancel goes back to.
    pub fn back(self) -> &'static str {
        match self {
            Self::Suspend => "/admin/apps",
            Self::Reject | Self::Unlist => "/admin/directory",
        }
    }

    /// The console section it belongs to.
    fn section(self) -> &'static str {
        match self {
            Self::Suspend => "apps",
            Self::Reject | Self::Unlist => "directory",
        }
    }

    /// Where the reason goes, for the field's label.
    pub fn kept(self) -> &'static str {
        match self {
            Self::Suspend => {
                "kept in the audit log and sent with the suspension to the app's webhook"
            }
            Self::Reject | Self::Unlist => {
                "kept in the audit log, shown to the app's developer and sent to its webhook, if any"
            }
        }
    }

    fn heading(self, app_name: &str) -> String {
        match self {
            Self::Suspend => format!("Suspend {app_name}?"),
            Self::Reject => format!("Reject {app_name}'s request to be listed?"),
            Self::Unlist => format!("Take {app_name} out of the directory?"),
        }
    }

    fn button(self, app_name: &str) -> String {
        match self {
            Self::Suspend => format!("Suspend {app_name}"),
            Self::Reject => "Reject the request".to_owned(),
            Self::Unlist => format!("Take {app_name} out"),
        }
    }

    /// What the field says when no reason was given.
    fn missing(self) -> &'static str {
        match self {
            Self::Suspend => "Say why the app is suspended: the reason is kept in the audit log.",
            Self::Reject => "Say why the request is rejected: the developer reads the reason.",
            Self::Unlist => "Say why the app leaves the directory: the developer reads the reason.",
        }
    }
}

#[derive(Template)]
#[template(path = "console_reason.html")]
pub struct ReasonPage<'a> {
    pub site: Site<'a>,
    pub section: &'static str,
    pub notice: Option<String>,
    pub csrf_token: &'a str,
    pub what: ReasonFor,
    pub heading: String,
    pub button: String,
    pub app_id: &'a str,
    pub app_name: &'a str,
    pub reason: &'a str,
    pub errors: FieldErrors,
}

/// The page that asks for the reason of `what` about app `app_id`, with
/// `reason` as typed and what was wrong with it.
pub fn page(
    state: &AppState,
    viewer: &Viewer,
    op: &Operator,
    what: ReasonFor,
    (app_id, app_name): (&str, &str),
    reason: &str,
    errors: FieldErrors,
) -> Response {
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    pages::render(
        status,
        &ReasonPage {
            site: viewer.site(&state.settings),
            section: what.section(),
            notice: None,
            csrf_token: &op.session.csrf_token,
            what,
            heading: what.heading(app_name),
            button: what.button(app_name),
            app_id,
            app_name,
            reason,
            errors,
        },
    )
}

/// The reason a form gave for `what`, or the field's message.
pub fn checked(what: ReasonFor, raw: Option<&str>) -> Result<Reason, FieldErrors> {
    Reason::parse(raw.unwrap_or_default()).map_err(|e| {
        let mut errors = FieldErrors::default();
        errors.add(
            "reason",
            match e {
                ReasonError::Missing => what.missing().to_owned(),
                ReasonError::TooLong => {
                    format!("Keep the reason to {REASON_MAX} characters or fewer.")
                }
                ReasonError::NotOneLine => "Keep the reason to one line.".to_owned(),
            },
        );
        errors
    })
}
