//! The integration directory is reviewed: an app asks to be listed, one of
//! the platform's operators approves or rejects the request (with a reason
//! the developer reads), and only an approved app is listed. This module
//! decides every move of a listing, and which changes to an approved app
//! send it back for review: what practice admins rely on when they press
//! Connect (the app's name, the scopes it may ask for, where Connect sends
//! them) is what an operator approved.

use crate::client::{Client, Reason};
use crate::event::EventKind;
use crate::listing::{Listing, ListingState, ReviewedField};

/// Which reviewed fields differ between two registrations of an app.
pub fn changed_fields(before: &Client, after: &Client) -> Vec<ReviewedField> {
    ReviewedField::ALL
        .into_iter()
        .filter(|f| match f {
            ReviewedField::Name => before.name != after.name,
            ReviewedField::Scopes => before.allowed_scopes != after.allowed_scopes,
            ReviewedField::ConnectUrl => before.connect_redirect_url != after.connect_redirect_url,
        })
        .collect()
}

/// What is asked of an app's listing.
#[derive(Debug, Clone, Copy)]
pub enum Decision<'a> {
    /// The developer (or an operator for them) asks for it to be listed.
    Request,
    /// The developer withdraws the request, or takes the listed app out.
    Withdraw,
    /// An operator approves the request. `seen` is the [`fingerprint`] of
    /// the registration they reviewed, when their form carried one: if the
    /// app changed since, nothing is approved.
    Approve { seen: Option<&'a str> },
    /// An operator declines the request, saying why.
    Reject { reason: &'a Reason },
    /// An operator takes a listed app out of the directory, saying why.
    Unlist { reason: &'a Reason },
}

/// A listing's move: what it becomes, and the event that records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub next: Listing,
    pub event: EventKind,
}

/// Why a listing cannot move as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListingError {
    #[error("a listed app needs a connect URL")]
    NoConnectUrl,
    #[error("the app is not waiting for review: it is {0}")]
    NotRequested(ListingState),
    #[error("the app is not listed in the directory: it is {0}")]
    NotListed(ListingState),
    #[error("the app changed since you opened it: review it again")]
    ChangedSinceReview,
}

/// Decides `decision` for `client` at `now`, made by `reviewer` (an
/// operator's user id; `None` for the command line). `Ok(None)`: there is
/// nothing to do (asking for what already holds), which is no error.
pub fn decide(
    client: &Client,
    decision: Decision<'_>,
    reviewer: Option<&str>,
    now: i64,
) -> Result<Option<Transition>, ListingError> {
    use ListingState as S;
    let current = &client.listing;
    let reviewed = |state, reason: Option<&Reason>| Listing {
        state,
        requested_at: current.requested_at,
        reviewed_at: Some(now),
        reviewed_by: reviewer.map(str::to_owned),
        reason: reason.map(|r| r.as_str().to_owned()),
        changed: Vec::new(),
    };
    let moved = |next, event| Ok(Some(Transition { next, event }));
    match (decision, current.state) {
        (Decision::Request, S::Requested | S::Approved) => Ok(None),
        (Decision::Request, S::NotListed | S::Rejected) => {
            if client.connect_redirect_url.is_none() {
                return Err(ListingError::NoConnectUrl);
            }
            moved(
                Listing::requested(now, Vec::new()),
                EventKind::ListingRequested,
            )
        }
        (Decision::Withdraw, S::Requested | S::Approved) => {
            moved(Listing::default(), EventKind::ListingWithdrawn)
        }
        (Decision::Withdraw, S::NotListed | S::Rejected) => Ok(None),
        (Decision::Approve { .. }, S::Approved) => Ok(None),
        (Decision::Approve { seen }, S::Requested) => {
            if seen.is_some_and(|seen| seen != fingerprint(client)) {
                return Err(ListingError::ChangedSinceReview);
            }
            if client.connect_redirect_url.is_none() {
                return Err(ListingError::NoConnectUrl);
            }
            moved(reviewed(S::Approved, None), EventKind::ListingApproved)
        }
        (Decision::Reject { reason }, S::Requested) => moved(
            reviewed(S::Rejected, Some(reason)),
            EventKind::ListingRejected,
        ),
        (Decision::Approve { .. } | Decision::Reject { .. }, state) => {
            Err(ListingError::NotRequested(state))
        }
        (Decision::Unlist { reason }, S::Approved) => moved(
            reviewed(S::NotListed, Some(reason)),
            EventKind::ClientUnlisted,
        ),
        (Decision::Unlist { .. }, state) => Err(ListingError::NotListed(state)),
    }
}

/// What saving a changed registration does to its listing. `before` is the
/// app as stored, `after` as it will be saved (its listing still
/// `before`'s); `wanted` is what the developer's form or the command line
/// said of listing (`None`: nothing). Changing a reviewed field of an
/// approved app sends it back for review, and a request or a listing needs
/// a connect URL.
pub fn after_update(
    before: &Client,
    after: &Client,
    wanted: Option<bool>,
    now: i64,
) -> Result<Option<Transition>, ListingError> {
    let current = &before.listing;
    let wants = wanted.unwrap_or(current.state.is_wanted());
    if wants && after.connect_redirect_url.is_none() {
        return Err(ListingError::NoConnectUrl);
    }
    if wanted == Some(false) {
        return decide(after, Decision::Withdraw, None, now);
    }
    let changed = changed_fields(before, after);
    match current.state {
        ListingState::Approved if !changed.is_empty() => Ok(Some(Transition {
            next: Listing::requested(now, changed),
            event: EventKind::ListingRequested,
        })),
        ListingState::NotListed | ListingState::Rejected if wanted == Some(true) => {
            decide(after, Decision::Request, None, now)
        }
        _ => Ok(None),
    }
}

/// What an operator reviews of an app, digested: its name, description,
/// scopes, redirect URIs and connect URL. A review form carries it, so
/// what is approved is what was seen.
pub fn fingerprint(client: &Client) -> String {
    let reviewed = serde_json::json!([
        client.name,
        client.description,
        client.allowed_scopes.to_string(),
        client
            .redirect_uris
            .iter()
            .map(|u| u.as_str())
            .collect::<Vec<_>>(),
        client.connect_redirect_url,
    ]);
    crate::secret::digest(&reviewed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{ClientKind, example};
    use crate::scope::ScopeSet;

    const CONNECT: &str = "https://partner.example/connect?code=";

    fn app(state: ListingState) -> Client {
        let mut c = example(ClientKind::Confidential);
        c.connect_redirect_url = Some(CONNECT.into());
        c.listing = match state {
            ListingState::NotListed => Listing::default(),
            _ => Listing {
                state,
                requested_at: Some(10),
                ..Listing::default()
            },
        };
        c
    }

    fn reason(text: &str) -> Reason {
        Reason::parse(text).unwrap()
    }

    #[test]
    fn each_decision_moves_only_from_where_it_may() {
        use Decision as D;
        use ListingState as S;
        let why = reason("Its connect page is broken");
        // (decision, from, what it becomes or why not; None: nothing to do)
        type Expected = Result<Option<(S, EventKind)>, ListingError>;
        let cases: Vec<(D, S, Expected)> = vec![
            (
                D::Request,
                S::NotListed,
                Ok(Some((S::Requested, EventKind::ListingRequested))),
            ),
            (
                D::Request,
                S::Rejected,
                Ok(Some((S::Requested, EventKind::ListingRequested))),
            ),
            (D::Request, S::Requested, Ok(None)),
            (D::Request, S::Approved, Ok(None)),
            (
                D::Withdraw,
                S::Requested,
                Ok(Some((S::NotListed, EventKind::ListingWithdrawn))),
            ),
            (
                D::Withdraw,
                S::Approved,
                Ok(Some((S::NotListed, EventKind::ListingWithdrawn))),
            ),
            (D::Withdraw, S::NotListed, Ok(None)),
            (D::Withdraw, S::Rejected, Ok(None)),
            (
                D::Approve { seen: None },
                S::Requested,
                Ok(Some((S::Approved, EventKind::ListingApproved))),
            ),
            (D::Approve { seen: None }, S::Approved, Ok(None)),
            (
                D::Approve { seen: None },
                S::NotListed,
                Err(ListingError::NotRequested(S::NotListed)),
            ),
            (
                D::Approve { seen: None },
                S::Rejected,
                Err(ListingError::NotRequested(S::Rejected)),
            ),
            (
                D::Reject { reason: &why },
                S::Requested,
                Ok(Some((S::Rejected, EventKind::ListingRejected))),
            ),
            (
                D::Reject { reason: &why },
                S::Approved,
                Err(ListingError::NotRequested(S::Approved)),
            ),
            (
                D::Reject { reason: &why },
                S::Rejected,
                Err(ListingError::NotRequested(S::Rejected)),
            ),
            (
                D::Reject { reason: &why },
                S::NotListed,
                Err(ListingError::NotRequested(S::NotListed)),
            ),
            (
                D::Unlist { reason: &why },
                S::Approved,
                Ok(Some((S::NotListed, EventKind::ClientUnlisted))),
            ),
            (
                D::Unlist { reason: &why },
                S::Requested,
                Err(ListingError::NotListed(S::Requested)),
            ),
            (
                D::Unlist { reason: &why },
                S::NotListed,
                Err(ListingError::NotListed(S::NotListed)),
            ),
            (
                D::Unlist { reason: &why },
                S::Rejected,
                Err(ListingError::NotListed(S::Rejected)),
            ),
        ];
        for (decision, from, expected) in cases {
            let got = decide(&app(from), decision, Some("usr-op"), 50)
                .map(|t| t.map(|t| (t.next.state, t.event)));
            assert_eq!(got, expected, "{decision:?} from {from:?}");
        }
    }

    #[test]
    fn a_review_records_who_when_and_why() {
        let why = reason("  Its connect page is broken ");
        let rejected = decide(
            &app(ListingState::Requested),
            Decision::Reject { reason: &why },
            Some("usr-op"),
            50,
        )
        .unwrap()
        .unwrap()
        .next;
        assert_eq!(
            rejected,
            Listing {
                state: ListingState::Rejected,
                requested_at: Some(10),
                reviewed_at: Some(50),
                reviewed_by: Some("usr-op".into()),
                reason: Some("Its connect page is broken".into()),
                changed: vec![],
            }
        );
        // Asking again starts afresh: the old reason is no longer shown.
        let mut c = app(ListingState::Rejected);
        c.listing = rejected;
        let again = decide(&c, Decision::Request, None, 60)
            .unwrap()
            .unwrap()
            .next;
        assert_eq!(again, Listing::requested(60, vec![]));
        // The command line approves as nobody in particular.
        let approved = decide(
            &app(ListingState::Requested),
            Decision::Approve { seen: None },
            None,
            70,
        )
        .unwrap()
        .unwrap()
        .next;
        assert_eq!(
            (approved.reviewed_at, approved.reviewed_by),
            (Some(70), None)
        );
        // Unlisted: not listed, with the operator's reason kept for the developer.
        let unlisted = decide(
            &app(ListingState::Approved),
            Decision::Unlist { reason: &why },
            Some("usr-op"),
            80,
        )
        .unwrap()
        .unwrap()
        .next;
        assert!(unlisted.was_unlisted() && !unlisted.is_approved());
        // Withdrawn by the developer: nothing is kept.
        let withdrawn = decide(&app(ListingState::Approved), Decision::Withdraw, None, 90)
            .unwrap()
            .unwrap()
            .next;
        assert_eq!(withdrawn, Listing::default());
    }

    #[test]
    fn a_listing_needs_a_connect_url() {
        let mut c = app(ListingState::NotListed);
        c.connect_redirect_url = None;
        assert_eq!(
            decide(&c, Decision::Request, None, 1),
            Err(ListingError::NoConnectUrl)
        );
        c.listing.state = ListingState::Requested;
        assert_eq!(
            decide(&c, Decision::Approve { seen: None }, None, 1),
            Err(ListingError::NoConnectUrl)
        );
    }

    #[test]
    fn only_what_was_seen_is_approved() {
        let c = app(ListingState::Requested);
        let seen = fingerprint(&c);
        assert!(
            decide(&c, Decision::Approve { seen: Some(&seen) }, None, 1)
                .unwrap()
                .is_some()
        );
        // Each reviewed part changes the fingerprint; the photo does not.
        let mut changed: Vec<Client> = Vec::new();
        for edit in 0..5 {
            let mut d = c.clone();
            match edit {
                0 => d.name = "Another".into(),
                1 => d.description = Some("Now does more".into()),
                2 => d.allowed_scopes = ScopeSet::parse("profile_read").unwrap(),
                3 => d
                    .redirect_uris
                    .push(crate::redirect::RedirectUri::parse("https://b.example/cb").unwrap()),
                _ => d.connect_redirect_url = Some("https://elsewhere.example/c".into()),
            }
            changed.push(d);
        }
        for d in &changed {
            assert_eq!(
                decide(d, Decision::Approve { seen: Some(&seen) }, None, 1),
                Err(ListingError::ChangedSinceReview),
                "{d:?}"
            );
        }
        let mut photo = c.clone();
        photo.photo_url = Some("https://a.example/p.png".into());
        assert_eq!(fingerprint(&photo), seen);
    }

    /// The rule of issue 13, item 6: changing an approved app's scopes,
    /// connect URL or name sends it back for review; nothing else does.
    #[test]
    fn changing_what_practices_rely_on_sends_an_approved_app_back_for_review() {
        type Edit = fn(&mut Client);
        let cases: Vec<(&str, Edit, Vec<ReviewedField>)> = vec![
            (
                "name",
                |c| c.name = "MyApp Pro".into(),
                vec![ReviewedField::Name],
            ),
            (
                "a scope added",
                |c| c.allowed_scopes = ScopeSet::parse("profile_read profile_write pay").unwrap(),
                vec![ReviewedField::Scopes],
            ),
            (
                "a scope removed",
                |c| c.allowed_scopes = ScopeSet::parse("profile_read").unwrap(),
                vec![ReviewedField::Scopes],
            ),
            (
                "connect URL",
                |c| c.connect_redirect_url = Some("https://elsewhere.example/c?code=".into()),
                vec![ReviewedField::ConnectUrl],
            ),
            (
                "name and scopes",
                |c| {
                    c.name = "Renamed".into();
                    c.allowed_scopes = ScopeSet::parse("pay").unwrap();
                },
                vec![ReviewedField::Name, ReviewedField::Scopes],
            ),
            (
                "description",
                |c| c.description = Some("New words".into()),
                vec![],
            ),
            (
                "photo",
                |c| c.photo_url = Some("https://a.example/p.png".into()),
                vec![],
            ),
            (
                "webhook",
                |c| c.webhook_url = Some("https://a.example/hook".into()),
                vec![],
            ),
            (
                "redirect URIs",
                |c| {
                    c.redirect_uris
                        .push(crate::redirect::RedirectUri::parse("https://a.example/cb2").unwrap())
                },
                vec![],
            ),
            ("nothing", |_| {}, vec![]),
        ];
        for (what, edit, sent_back) in cases {
            let before = app(ListingState::Approved);
            let mut after = before.clone();
            edit(&mut after);
            assert_eq!(changed_fields(&before, &after), sent_back, "{what}");
            for wanted in [None, Some(true)] {
                let got = after_update(&before, &after, wanted, 99).unwrap();
                if sent_back.is_empty() {
                    assert_eq!(got, None, "{what}, {wanted:?}: stays listed");
                } else {
                    let t = got.unwrap_or_else(|| panic!("{what}: sent back"));
                    assert_eq!(t.event, EventKind::ListingRequested, "{what}");
                    assert_eq!(t.next, Listing::requested(99, sent_back.clone()), "{what}");
                }
            }
            // The same changes to an app that is not listed move nothing.
            for state in [
                ListingState::NotListed,
                ListingState::Requested,
                ListingState::Rejected,
            ] {
                let mut before = before.clone();
                before.listing.state = state;
                let mut after = after.clone();
                after.listing.state = state;
                assert_eq!(
                    after_update(&before, &after, None, 99).unwrap(),
                    None,
                    "{what}, {state:?}"
                );
            }
        }
    }

    #[test]
    fn the_developers_wish_asks_withdraws_or_keeps() {
        use ListingState as S;
        // (from, wanted, becomes; None: unchanged)
        let cases = [
            (S::NotListed, Some(true), Some(S::Requested)),
            (S::Rejected, Some(true), Some(S::Requested)),
            (S::Requested, Some(true), None),
            (S::Approved, Some(true), None),
            (S::Requested, Some(false), Some(S::NotListed)),
            (S::Approved, Some(false), Some(S::NotListed)),
            (S::NotListed, Some(false), None),
            (S::Rejected, Some(false), None),
            (S::NotListed, None, None),
            (S::Approved, None, None),
        ];
        for (from, wanted, becomes) in cases {
            let c = app(from);
            let got = after_update(&c, &c, wanted, 5)
                .unwrap()
                .map(|t| t.next.state);
            assert_eq!(got, becomes, "{from:?} {wanted:?}");
        }
        // Asking, or staying asked, without a connect URL is refused.
        for (from, wanted) in [
            (S::NotListed, Some(true)),
            (S::Approved, None),
            (S::Requested, None),
        ] {
            let before = app(from);
            let mut after = before.clone();
            after.connect_redirect_url = None;
            assert_eq!(
                after_update(&before, &after, wanted, 5),
                Err(ListingError::NoConnectUrl),
                "{from:?} {wanted:?}"
            );
        }
        // Withdrawing and clearing the connect URL at once is fine.
        let before = app(S::Approved);
        let mut after = before.clone();
        after.connect_redirect_url = None;
        assert_eq!(
            after_update(&before, &after, Some(false), 5)
                .unwrap()
                .map(|t| t.next.state),
            Some(S::NotListed)
        );
    }
}
