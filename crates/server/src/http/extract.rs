//! The one way in for every page: extractors that say who is asking and
//! what they sent, so a handler starts from typed facts.
//!
//! - [`SignedIn`]: an active person (not locked, not deleted) with a live
//!   session. A page (GET) without one is redirected to sign in and come
//!   back; a form is refused (403), never redirected.
//!   A person whose password is temporary (an operator reset it) is sent
//!   to choose their own first ([`NEW_PASSWORD_PAGE`]), and comes back after;
//!   a person who must have a second factor and has none is sent to set one
//!   up first ([`SECURITY_PAGE`]), and comes back after.
//! - [`Enrolling`]: a signed-in person on the page where second factors are
//!   set up, who may have to set one up before anything else.
//! - [`PasswordChange`]: a signed-in person, temporary password or not: the
//!   one extractor that lets in someone who must choose a password, used by
//!   that page alone (signing out needs no extractor).
//! - [`Operator`]: the same as `SignedIn`, and one of the platform's
//!   operators; anyone else signed in is refused (403).
//! - [`CsrfForm`]: a form whose `csrf_token` matches the session's and whose
//!   `Origin`, if sent, is this server's, read alike from URL-encoded and
//!   multipart bodies and deserialised into the handler's own struct.
//!
//! A locked or deleted account is refused the same way everywhere: its
//! session no longer signs anybody in.

use std::collections::BTreeMap;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use healthgate_core::redirect::with_query_params;
use healthgate_core::user::User;
use healthgate_store::{Actor, Session};
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};

use crate::http::error::PageError;
use crate::http::forms::Form;
use crate::http::ip::ClientIp;
use crate::http::pages::{Person, Site};
use crate::http::session;
use crate::services::photos::MAX_PHOTO;
use crate::state::AppState;

/// Where a person whose password is temporary chooses their own, before
/// anything else.
pub const NEW_PASSWORD_PAGE: &str = "/account/password/new";

/// Where a person sets up their second factors; one who must have one and
/// has none is sent here before anything else.
pub const SECURITY_PAGE: &str = "/account/security";

/// The second step of signing in (and a step-up): a code or a passkey.
pub const SECOND_FACTOR_PAGE: &str = "/login/second-factor";

/// What a form sent by a person who must first set up a second factor is
/// told.
pub const ENROL_FIRST: &str =
    "Set up a second factor first: this platform requires one for your account.";

/// What a form sent by a person who must first choose a password is told.
pub const CHOOSE_A_PASSWORD_FIRST: &str =
    "Choose a new password first: the one you signed in with was temporary.";

/// What a signed-in person who is not an operator is told.
pub const OPERATORS_ONLY: &str = "Only the platform's operators can use the admin console.";

/// Why a request was not let in: a visitor opening a page is sent to sign in
/// and come back; anything else is an error page.
#[derive(Debug)]
pub enum Refusal {
    SignIn(String),
    /// A temporary password: choose one's own, then come back here.
    NewPassword(String),
    /// A second factor is required and there is none: set one up, then
    /// come back here.
    Enrol(String),
    Page(PageError),
}

impl<E: Into<PageError>> From<E> for Refusal {
    fn from(e: E) -> Self {
        Self::Page(e.into())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::SignIn(return_to) => {
                let target = with_query_params("/login", &[("return_to", &return_to)]);
                Redirect::to(&target).into_response()
            }
            Self::NewPassword(return_to) => {
                let target = with_query_params(NEW_PASSWORD_PAGE, &[("return_to", &return_to)]);
                Redirect::to(&target).into_response()
            }
            Self::Enrol(return_to) => {
                let target = with_query_params(SECURITY_PAGE, &[("return_to", &return_to)]);
                Redirect::to(&target).into_response()
            }
            Self::Page(e) => e.into_response(),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header (RFC 6750 §2.1),
/// trimmed, whatever it is: a practice API key, a partner's secret, an
/// initial or registration access token.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

/// An active person with a live session.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub session: Session,
    pub user: User,
}

impl SignedIn {
    /// The person as the actor of the events their actions write.
    pub fn actor<'a>(&'a self, ip: &'a ClientIp) -> Actor<'a> {
        Actor::user(&self.user.id, ip.as_deref())
    }
}

/// What the signed-in person must do before anything else: choose a
/// password (theirs is temporary: an operator reset it), then set up a
/// second factor (one is required and they have none).
#[derive(Debug, Clone, Copy, Default)]
pub struct Due {
    pub password: bool,
    pub second_factor: bool,
}

impl Due {
    fn any(self) -> bool {
        self.password || self.second_factor
    }
}

/// The signed-in person behind `parts`, if any, and what they must do
/// first; found once per request.
async fn signed_in(
    parts: &mut Parts,
    state: &AppState,
) -> Result<Option<(SignedIn, Due)>, PageError> {
    if let Some(found) = parts.extensions.get::<Option<SignedIn>>() {
        let due = parts.extensions.get::<Due>().copied().unwrap_or_default();
        return Ok(found.clone().map(|person| (person, due)));
    }
    let found = match session::logged_in(state, &parts.headers).await? {
        Some(session) => {
            let user_id = session.user_id.clone().unwrap_or_default();
            state
                .store
                .user(&user_id)
                .await?
                .filter(User::is_active)
                .map(|user| SignedIn { session, user })
        }
        None => None,
    };
    let due = match &found {
        Some(person) => Due {
            password: person.user.password_is_temporary(),
            second_factor: crate::services::mfa::must_enrol(state, &person.user).await?,
        },
        None => Due::default(),
    };
    parts.extensions.insert(found.clone());
    parts.extensions.insert(due);
    Ok(found.map(|person| (person, due)))
}

/// This request's path and query, to come back to.
fn here(parts: &Parts) -> String {
    parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned())
}

/// The refusal for a request nobody is signed in for: a page goes to sign
/// in and comes back to where it was; a form is refused.
fn sign_in_first(parts: &Parts) -> Refusal {
    if matches!(parts.method, Method::GET | Method::HEAD) {
        Refusal::SignIn(here(parts))
    } else {
        PageError::forbidden("Please sign in again.").into()
    }
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Refusal> {
        match signed_in(parts, state).await? {
            Some((person, due)) if !due.any() => Ok(person),
            Some((_, due)) => Err(first_things_first(parts, due)),
            None => Err(sign_in_first(parts)),
        }
    }
}

/// The refusal for a person who must first choose a password or set up a
/// second factor: a page waits until they did (and comes back); a form is
/// refused.
fn first_things_first(parts: &Parts, due: Due) -> Refusal {
    let page = matches!(parts.method, Method::GET | Method::HEAD);
    match (due.password, page) {
        (true, true) => Refusal::NewPassword(here(parts)),
        (true, false) => PageError::forbidden(CHOOSE_A_PASSWORD_FIRST).into(),
        (false, true) => Refusal::Enrol(here(parts)),
        (false, false) => PageError::forbidden(ENROL_FIRST).into(),
    }
}

/// Who is looking at a page, for its header: the signed-in person (whoever
/// they are, a visitor otherwise) and what they may use, so the navigation
/// links only to that. Never a refusal: every page has a header.
#[derive(Debug, Clone, Default)]
pub struct Viewer(Option<Person>);

impl Viewer {
    /// The page frame for this viewer.
    pub fn site<'a>(&'a self, settings: &'a crate::config::Settings) -> Site<'a> {
        Site::of(settings).seen_by(self.0.as_ref())
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Refusal> {
        let Some((person, due)) = signed_in(parts, state).await? else {
            return Ok(Self(None));
        };
        let practice_admin = !state
            .store
            .organizations_where(&person.user.id, healthgate_core::org::ADMIN)
            .await?
            .is_empty();
        Ok(Self(Some(Person {
            name: person
                .user
                .name
                .clone()
                .unwrap_or_else(|| person.user.username.clone()),
            csrf_token: person.session.csrf_token.clone(),
            operator: person.user.operator,
            practice_admin,
            choosing_password: due.any(),
        })))
    }
}

/// For a page that finds its person itself because a visitor is welcome
/// too (the home page, the developer portal's index): the way to choose a
/// password first, then come back to `here`, if `user`'s is temporary.
pub fn choose_password_first(user: &User, here: &str) -> Option<Response> {
    user.password_is_temporary()
        .then(|| Refusal::NewPassword(here.to_owned()).into_response())
}

/// A signed-in person on the page where they choose a password, and whether
/// they must (their password is temporary).
#[derive(Debug, Clone)]
pub struct PasswordChange {
    pub person: SignedIn,
    pub temporary: bool,
}

impl FromRequestParts<AppState> for PasswordChange {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Refusal> {
        match signed_in(parts, state).await? {
            Some((person, due)) => Ok(Self {
                person,
                temporary: due.password,
            }),
            None => Err(sign_in_first(parts)),
        }
    }
}

/// A signed-in person on the page where second factors are set up, and
/// whether they must set one up before anything else. A temporary password
/// is chosen first.
#[derive(Debug, Clone)]
pub struct Enrolling {
    pub person: SignedIn,
    pub must: bool,
}

impl FromRequestParts<AppState> for Enrolling {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Refusal> {
        match signed_in(parts, state).await? {
            Some((_, due)) if due.password => Err(first_things_first(parts, due)),
            Some((person, due)) => Ok(Self {
                person,
                must: due.second_factor,
            }),
            None => Err(sign_in_first(parts)),
        }
    }
}

/// A signed-in operator of the platform.
#[derive(Debug, Clone)]
pub struct Operator(pub SignedIn);

impl std::ops::Deref for Operator {
    type Target = SignedIn;
    fn deref(&self) -> &SignedIn {
        &self.0
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Refusal> {
        let person = SignedIn::from_request_parts(parts, state).await?;
        if person.user.operator {
            Ok(Self(person))
        } else {
            Err(PageError::forbidden(OPERATORS_ONLY).into())
        }
    }
}

/// The typed fields of a form read field by field (through
/// [`CsrfForm::form`]): none.
#[derive(Debug, Default, serde::Deserialize)]
pub struct AnyFields {}

/// A form checked against the session: its `csrf_token` is the session's
/// and its `Origin`, if sent, is this server's. `fields` is the form
/// deserialised into `T` (see [`from_fields`]); `form` keeps everything,
/// files included.
pub struct CsrfForm<T> {
    pub fields: T,
    pub form: Form,
    /// The session the token was checked against.
    pub session: Session,
}

impl<T: DeserializeOwned> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = Refusal;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Refusal> {
        let known = request
            .extensions()
            .get::<Option<SignedIn>>()
            .cloned()
            .flatten();
        let headers = request.headers().clone();
        let session = match known {
            Some(person) => Some(person.session),
            None => session::current(state, &headers).await?,
        };
        let (_, form) = Form::read(state, request, MAX_PHOTO).await?;
        session::check_csrf(
            state,
            &headers,
            session.as_ref(),
            form.text("csrf_token").as_deref(),
        )?;
        let Some(session) = session else {
            return Err(PageError::forbidden("Please sign in again.").into());
        };
        let fields = from_fields(form.pairs()).map_err(|e| {
            tracing::info!(error = %e, "form refused: fields do not fit");
            PageError {
                status: StatusCode::BAD_REQUEST,
                title: "This request cannot be completed",
                message: "The form was not filled in as this page expects. Go back, reload the page and try again.".into(),
            }
        })?;
        Ok(Self {
            fields,
            form,
            session,
        })
    }
}

/// Deserialises form fields into `T`: a field's first value for a scalar
/// (strings, numbers; an empty value counts as absent for an `Option`),
/// every value for a `Vec` (checkboxes), and a `bool` is true when the
/// field was sent (a ticked checkbox). Fields `T` does not name are
/// ignored, so the `csrf_token` needs no place in it.
pub fn from_fields<'a, T: DeserializeOwned>(
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<T, FieldsError> {
    let mut grouped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in pairs {
        grouped.entry(k.to_owned()).or_default().push(v.to_owned());
    }
    let map =
        de::value::MapDeserializer::new(grouped.into_iter().map(|(k, values)| (k, Values(values))));
    T::deserialize(map)
}

/// Why a form did not fit the struct a handler reads it into.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FieldsError(String);

impl de::Error for FieldsError {
    fn custom<M: std::fmt::Display>(msg: M) -> Self {
        Self(msg.to_string())
    }
}

/// Every value a field was sent with.
struct Values(Vec<String>);

impl<'de> IntoDeserializer<'de, FieldsError> for Values {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl Values {
    fn first(&self) -> &str {
        self.0.first().map_or("", String::as_str)
    }

    fn parse<N: std::str::FromStr>(&self) -> Result<N, FieldsError> {
        self.first()
            .trim()
            .parse()
            .map_err(|_| FieldsError(format!("{:?} is not a number", self.first())))
    }
}

macro_rules! numbers {
    ($($method:ident $visit:ident $ty:ty),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldsError> {
            visitor.$visit(self.parse::<$ty>()?)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Values {
    type Error = FieldsError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldsError> {
        visitor.visit_string(self.first().to_owned())
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldsError> {
        if self.first().trim().is_empty() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldsError> {
        visitor.visit_bool(true)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldsError> {
        visitor.visit_seq(de::value::SeqDeserializer::new(
            self.0.into_iter().map(|v| Values(vec![v])),
        ))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, FieldsError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, FieldsError> {
        visitor.visit_enum(self.first().to_owned().into_deserializer())
    }

    numbers!(
        deserialize_i8 visit_i8 i8, deserialize_i16 visit_i16 i16,
        deserialize_i32 visit_i32 i32, deserialize_i64 visit_i64 i64,
        deserialize_u8 visit_u8 u8, deserialize_u16 visit_u16 u16,
        deserialize_u32 visit_u32 u32, deserialize_u64 visit_u64 u64
    );

    serde::forward_to_deserialize_any! {
        f32 f64 char str string bytes byte_buf unit unit_struct tuple
        tuple_struct map struct identifier ignored_any i128 u128
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        Practice,
        Clinic,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Fields {
        name: String,
        note: Option<String>,
        #[serde(default)]
        scope: Vec<String>,
        #[serde(default)]
        published: bool,
        #[serde(default)]
        listed: bool,
        limit: Option<u32>,
        kind: Kind,
    }

    fn read(pairs: &[(&str, &str)]) -> Result<Fields, FieldsError> {
        from_fields(pairs.iter().map(|(k, v)| (*k, *v)))
    }

    #[test]
    fn forms_read_into_typed_fields() {
        let got = read(&[
            ("csrf_token", "x"),
            ("name", "Harbor"),
            ("note", ""),
            ("scope", "profile_read"),
            ("scope", "openid"),
            ("published", "1"),
            ("limit", "25"),
            ("kind", "clinic"),
        ])
        .unwrap();
        assert_eq!(
            got,
            Fields {
                name: "Harbor".into(),
                note: None,
                scope: vec!["profile_read".into(), "openid".into()],
                published: true,
                listed: false,
                limit: Some(25),
                kind: Kind::Clinic,
            }
        );
        let got = read(&[("name", "A"), ("kind", "practice"), ("note", "hi")]).unwrap();
        assert_eq!(
            (got.note.as_deref(), got.kind),
            (Some("hi"), Kind::Practice)
        );
    }

    #[test]
    fn forms_that_do_not_fit_are_refused() {
        for pairs in [
            &[("kind", "practice")][..],
            &[("name", "A"), ("kind", "hospital")],
            &[("name", "A"), ("kind", "practice"), ("limit", "many")],
        ] {
            assert!(read(pairs).is_err(), "{pairs:?}");
        }
    }
}
