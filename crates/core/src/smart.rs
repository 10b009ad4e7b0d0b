//! SMART App Launch 2.2 scopes (HL7, `smart-app-launch/
//! scopes-and-launch-context.html`): clinical scopes on FHIR resources, v2
//! and v1 forms, with finer constraints as search parameters; launch
//! context scopes; identity and refresh scopes. Parsing, what a registered
//! scope allows an app to ask for, and the words the consent page uses.
//!
//! ```text
//! clinical = ("patient" | "user" | "system") "/" (ResourceType | "*") "."
//!            (v2 | v1) [ "?" param "=" value *( "&" param "=" value ) ]
//! v2       = a non-empty subsequence of "cruds", in that order
//! v1       = "read" | "write" | "*"      ; ⇒ rs, cud, cruds
//! launch   = "launch" | "launch/" type [ "?role=" uri ]
//! ```

use std::fmt;

use crate::error::OAuthError;

/// Whose records a clinical scope reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Compartment {
    /// The patient in context (the one launched for, or picked).
    Patient,
    /// Whatever the signed-in person may see.
    User,
    /// A backend service acting for itself (client credentials only).
    System,
}

impl Compartment {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Patient => "patient",
            Self::User => "user",
            Self::System => "system",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "patient" => Some(Self::Patient),
            "user" => Some(Self::User),
            "system" => Some(Self::System),
            _ => None,
        }
    }
}

/// The FHIR interactions a clinical scope permits: create, read, update,
/// delete, search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Interactions(u8);

const LETTERS: [(char, u8, &str); 5] = [
    ('c', 1, "create"),
    ('r', 2, "read"),
    ('u', 4, "update"),
    ('d', 8, "delete"),
    ('s', 16, "search"),
];

impl Interactions {
    pub const READ: Self = Self(2 | 16);
    pub const WRITE: Self = Self(1 | 4 | 8);
    pub const ALL: Self = Self(31);

    /// The v2 form: letters of `cruds`, each at most once and in that order
    /// ("Valid suffixes are a subset of the in-order string `.cruds`").
    fn parse_v2(s: &str) -> Option<Self> {
        let mut bits = 0u8;
        let mut next = 0;
        for c in s.chars() {
            let at = LETTERS[next..].iter().position(|(l, _, _)| *l == c)?;
            bits |= LETTERS[next + at].1;
            next += at + 1;
        }
        (bits != 0).then_some(Self(bits))
    }

    /// The v1 form, with the meaning v2 gives it.
    fn parse_v1(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Self::READ),
            "write" => Some(Self::WRITE),
            "*" => Some(Self::ALL),
            _ => None,
        }
    }

    /// Whether every interaction of `other` is one of these.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn letters(self) -> String {
        LETTERS
            .iter()
            .filter(|(_, bit, _)| self.0 & bit != 0)
            .map(|(l, _, _)| *l)
            .collect()
    }

    fn verbs(self) -> Vec<&'static str> {
        LETTERS
            .iter()
            .filter(|(_, bit, _)| self.0 & bit != 0)
            .map(|(_, _, verb)| *verb)
            .collect()
    }

    fn v1(self) -> Option<&'static str> {
        match self {
            Self::READ => Some("read"),
            Self::WRITE => Some("write"),
            Self::ALL => Some("*"),
            _ => None,
        }
    }
}

/// A clinical scope: interactions on one resource type (or all) of a
/// compartment, perhaps narrowed by search parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceScope {
    pub compartment: Compartment,
    /// `None` for the wildcard `*`: every resource type.
    pub resource: Option<String>,
    pub interactions: Interactions,
    /// Written in the v1 form (`.read`, `.write`, `.*`); kept so that the
    /// scope granted is returned as it was asked for.
    pub v1: bool,
    /// `?param=value&…`: only resources that such a search would find.
    pub constraints: Vec<(String, String)>,
}

impl ResourceScope {
    /// Whether an app granted (or registered with) this scope may be
    /// granted `narrower`: the same compartment, the same resource type (or
    /// this one is the wildcard), no interaction more, and every constraint
    /// of this one kept (more may be added).
    pub fn allows(&self, narrower: &ResourceScope) -> bool {
        self.compartment == narrower.compartment
            && (self.resource.is_none() || self.resource == narrower.resource)
            && self.interactions.contains(narrower.interactions)
            && self
                .constraints
                .iter()
                .all(|c| narrower.constraints.contains(c))
    }
}

impl fmt::Display for ResourceScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}.",
            self.compartment.as_str(),
            self.resource.as_deref().unwrap_or("*")
        )?;
        match self.interactions.v1().filter(|_| self.v1) {
            Some(v1) => f.write_str(v1)?,
            None => f.write_str(&self.interactions.letters())?,
        }
        for (i, (param, value)) in self.constraints.iter().enumerate() {
            write!(f, "{}{param}={value}", if i == 0 { '?' } else { '&' })?;
        }
        Ok(())
    }
}

/// A scope SMART defines.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SmartScope {
    Resource(ResourceScope),
    /// `launch`: the context of an EHR launch (with the `launch` parameter).
    Launch,
    /// `launch/patient`, `launch/encounter`, `launch/<type>`: a context the
    /// app needs, picked at sign-in in a standalone launch. `kind` is the
    /// resource type in lower case, as the scope writes it.
    LaunchContext {
        kind: String,
        role: Option<String>,
    },
    OpenId,
    /// `fhirUser`: the signed-in person's FHIR resource, in the ID token.
    FhirUser,
    /// A refresh token that outlives the session.
    OfflineAccess,
    /// A refresh token usable while the person stays signed in.
    OnlineAccess,
}

/// Whether `token` is a SMART scope that concerns a FHIR server (clinical
/// data or launch context), so a request for it must name the server
/// (`aud`).
pub fn needs_fhir_server(token: &str) -> bool {
    matches!(
        parse(token),
        Ok(Some(
            SmartScope::Resource(_) | SmartScope::Launch | SmartScope::LaunchContext { .. }
        ))
    )
}

impl SmartScope {
    pub fn as_resource(&self) -> Option<&ResourceScope> {
        match self {
            Self::Resource(r) => Some(r),
            _ => None,
        }
    }
}

impl fmt::Display for SmartScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Resource(r) => r.fmt(f),
            Self::Launch => f.write_str("launch"),
            Self::LaunchContext { kind, role } => {
                write!(f, "launch/{kind}")?;
                match role {
                    Some(role) => write!(f, "?role={role}"),
                    None => Ok(()),
                }
            }
            Self::OpenId => f.write_str("openid"),
            Self::FhirUser => f.write_str("fhirUser"),
            Self::OfflineAccess => f.write_str("offline_access"),
            Self::OnlineAccess => f.write_str("online_access"),
        }
    }
}

/// What a SMART grant stands for beyond its scopes: the FHIR server its
/// tokens are for, and the launch context (SMART App Launch 2.2 §Launch
/// context arrives with your access token). Kept with the code and the
/// token family, so the token response, introspection and every refresh
/// say the same.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SmartContext {
    /// The FHIR base URL the app named (`aud`).
    pub aud: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter: Option<String>,
    /// References to other resources in context (`{"reference": …}`,
    /// `{"canonical": …}`, with an optional `role`).
    #[serde(default, rename = "fhirContext", skip_serializing_if = "Vec::is_empty")]
    pub fhir_context: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub need_patient_banner: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smart_style_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The signed-in person's FHIR resource as an absolute URL, when
    /// `fhirUser` was granted and the person has one: the ID token's and
    /// introspection's `fhirUser`, not a launch parameter.
    #[serde(default, rename = "fhirUser", skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    /// `online_access` without `offline_access`: the digest of the browser
    /// session the grant was made in. Its refresh tokens work while that
    /// session lasts (the person stays signed in there); kept with the
    /// grant, never said to anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online_session: Option<String>,
}

impl SmartContext {
    /// For the FHIR server at `aud`, with no launch context yet.
    pub fn for_server(aud: impl Into<String>) -> Self {
        Self {
            aud: aud.into(),
            ..Self::default()
        }
    }

    /// The launch context parameters the token response carries beside the
    /// access token (`patient`, `encounter`, `fhirContext`, …): every field
    /// set but `aud` and `fhirUser`, which are not among them.
    pub fn launch_parameters(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut map = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        map.remove("aud");
        map.remove("fhirUser");
        map.remove("online_session");
        map
    }

    /// With the person's `fhirUser` (`Practitioner/123`), made absolute with
    /// this grant's FHIR server.
    pub fn with_fhir_user(mut self, reference: &str) -> Self {
        self.fhir_user = Some(format!("{}/{reference}", self.aud));
        self
    }

    /// The stored form (a JSON object).
    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads the stored form back.
    pub fn from_stored(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// A patient record a person may act for (their own, a child's): what a
/// standalone launch's picker lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientLink {
    /// The patient's FHIR id on the FHIR servers healthgate fronts.
    pub patient_id: String,
    /// How the picker names it ("Jane Doe").
    pub display: String,
}

/// Checks a patient link before it is kept: a FHIR id, and a name of 1 to
/// 200 characters.
pub fn check_patient_link(link: &PatientLink) -> Result<(), String> {
    if !is_fhir_id(&link.patient_id) {
        return Err(
            "the patient must be a FHIR resource id (letters, digits, - and ., at most 64)".into(),
        );
    }
    let display = link.display.trim();
    if display.is_empty() || display.len() > 200 || display != link.display {
        return Err(
            "the display name must be 1 to 200 characters, without surrounding spaces".into(),
        );
    }
    Ok(())
}

/// Checks a person's `fhirUser` before it is kept: a relative reference to
/// a `Patient`, `Practitioner`, `PractitionerRole`, `RelatedPerson` or
/// `Person` (SMART App Launch 2.2 §fhirUser).
pub fn check_fhir_user(reference: &str) -> Result<(), String> {
    let ok = reference.split_once('/').is_some_and(|(kind, id)| {
        matches!(
            kind,
            "Patient" | "Practitioner" | "PractitionerRole" | "RelatedPerson" | "Person"
        ) && is_fhir_id(id)
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "fhirUser {reference:?} must be a reference such as Practitioner/123 (Patient, Practitioner, PractitionerRole, RelatedPerson or Person)"
        ))
    }
}

/// Who a grant speaks for, as far as SMART's scopes care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// A client acting for itself (client credentials: Backend Services).
    Client,
    /// A person who authorized the app.
    Person,
}

/// Whether a grant for `holder` may carry `token`: SMART's `system/`
/// scopes are for a client acting for itself, its `patient/` and `user/`
/// scopes and launch contexts need a person; any other scope (identity,
/// refresh, the platform's own, or a malformed one, refused elsewhere)
/// either.
pub fn grantable_to(token: &str, holder: Holder) -> bool {
    match parse(token) {
        Ok(Some(SmartScope::Resource(r))) => {
            (r.compartment == Compartment::System) == (holder == Holder::Client)
        }
        Ok(Some(SmartScope::Launch | SmartScope::LaunchContext { .. })) => holder == Holder::Person,
        _ => true,
    }
}

/// Whether a grant gets a refresh token: every grant but a SMART one (a
/// FHIR server in its context), which gets one only with `offline_access`
/// or `online_access` (SMART App Launch 2.2 §Scopes for requesting a
/// refresh token).
pub fn issues_refresh<'a>(
    smart: Option<&SmartContext>,
    scope: impl IntoIterator<Item = &'a str>,
) -> bool {
    smart.is_none()
        || scope
            .into_iter()
            .any(|s| s == "offline_access" || s == "online_access")
}

/// Whether a grant of `scope` keeps its refresh tokens only while the
/// person stays signed in: `online_access` without `offline_access` (SMART
/// App Launch 2.2 §Scopes for requesting a refresh token).
pub fn is_online_only(scope: &crate::scope::ScopeSet) -> bool {
    scope.contains("online_access") && !scope.contains("offline_access")
}

/// Whether a grant of `scope` must have a patient in context: it asks for
/// `launch/patient`, or for the data of one patient (`patient/…`; SMART
/// App Launch 2.2: "the EHR SHALL establish a patient in context").
pub fn needs_patient<'a>(scope: impl IntoIterator<Item = &'a str>) -> bool {
    scope.into_iter().any(|t| match parse(t) {
        Ok(Some(SmartScope::Resource(r))) => r.compartment == Compartment::Patient,
        Ok(Some(SmartScope::LaunchContext { kind, .. })) => kind == "patient",
        _ => false,
    })
}

/// How long an EHR launch may wait for the authorization request that
/// uses it: the app is opened with it at once, and the person is normally
/// signed in already.
pub const LAUNCH_TTL: i64 = 300;

/// An EHR launch (SMART App Launch 2.2 §EHR launch): made by the platform
/// acting as the EHR, for one app and perhaps one person, used once by the
/// authorization request that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub client_id: String,
    /// The person it was made for, when the launcher named one.
    pub user_id: Option<String>,
    /// The FHIR server (`aud`, the `iss` the app was launched with) and the
    /// launch context.
    pub context: SmartContext,
    /// The launcher (a client registered as one).
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub consumed_at: Option<i64>,
}

/// Why a launch cannot start an authorization: one answer for a launch
/// that does not exist, belongs to another app, expired or was used, so
/// that a guess learns nothing.
pub const UNUSABLE_LAUNCH: &str = "launch is unknown, expired or already used";

impl Launch {
    /// Whether the authorization request of `client_id` for the FHIR
    /// server `aud` may use it at `now`.
    pub fn admits(&self, client_id: &str, aud: Option<&str>, now: i64) -> Result<(), OAuthError> {
        if self.client_id != client_id || self.consumed_at.is_some() || now >= self.expires_at {
            return Err(OAuthError::invalid_request(UNUSABLE_LAUNCH));
        }
        if aud != Some(self.context.aud.as_str()) {
            return Err(OAuthError::invalid_request(
                "aud is not the FHIR server the app was launched with (iss)",
            ));
        }
        Ok(())
    }

    /// Whether `user_id` may use it: anyone signed in when the launcher
    /// named nobody, otherwise only that person.
    pub fn is_for(&self, user_id: &str) -> bool {
        self.user_id.as_deref().is_none_or(|u| u == user_id)
    }
}

/// Whether `id` is a FHIR resource id (`[A-Za-z0-9\-\.]{1,64}`, FHIR R4
/// §2.24.0.1 id).
pub fn is_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Checks the launch context a launcher gives, before it is kept: `patient`
/// and `encounter` are FHIR ids; each `fhirContext` item is an object that
/// names a resource (`reference`, `canonical` or `identifier`, SMART App
/// Launch 2.2 §fhirContext); `smart_style_url` is an absolute `https` URL;
/// `intent` and `tenant` are short text. The error names the field.
pub fn check_context(context: &SmartContext) -> Result<(), String> {
    for (name, id) in [
        ("patient", &context.patient),
        ("encounter", &context.encounter),
    ] {
        if let Some(id) = id
            && !is_fhir_id(id)
        {
            return Err(format!(
                "{name} must be a FHIR resource id (letters, digits, - and ., at most 64)"
            ));
        }
    }
    for item in &context.fhir_context {
        let names_one = item.as_object().is_some_and(|o| {
            ["reference", "canonical", "identifier"]
                .iter()
                .any(|k| o.contains_key(*k))
                && o.get("reference")
                    .is_none_or(|r| r.as_str().is_some_and(|r| !r.is_empty()))
                && o.get("canonical")
                    .is_none_or(|c| c.as_str().is_some_and(|c| !c.is_empty()))
        });
        if !names_one {
            return Err(
                "each fhirContext item must be an object with a reference, canonical or identifier"
                    .into(),
            );
        }
    }
    if context.fhir_context.len() > 20 {
        return Err("fhirContext may name at most 20 resources".into());
    }
    if let Some(style) = &context.smart_style_url
        && !url::Url::parse(style).is_ok_and(|u| u.scheme() == "https" && u.host().is_some())
    {
        return Err("smart_style_url must be an absolute https URL".into());
    }
    for (name, text) in [("intent", &context.intent), ("tenant", &context.tenant)] {
        if text.as_ref().is_some_and(|t| t.is_empty() || t.len() > 200) {
            return Err(format!("{name} must be 1 to 200 characters"));
        }
    }
    Ok(())
}

/// What "every scope" covers of SMART's, for a role that may grant
/// everything: every clinical scope of the patient and of the user, the
/// usual launch contexts, identity and refresh. Not `system/`: a person
/// never grants a backend service's access.
pub const EVERY: &[&str] = &[
    "patient/*.cruds",
    "user/*.cruds",
    "launch",
    "launch/patient",
    "launch/encounter",
    "openid",
    "fhirUser",
    "offline_access",
    "online_access",
];

/// A scope written in SMART's form but not well formed; the message is fit
/// for an `invalid_scope` description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope '{scope}' is not a valid SMART scope: {reason}")]
pub struct SmartScopeError {
    pub scope: String,
    pub reason: &'static str,
}

/// A FHIR resource type name: a capital letter, then letters.
fn is_resource_type(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_alphabetic())
        && s.len() <= 64
}

/// A search parameter's name, with a modifier (`code:in`) or a chain
/// (`patient.birthdate`) if any.
fn is_param(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

fn parse_constraints(query: &str) -> Option<Vec<(String, String)>> {
    query
        .split('&')
        .map(|pair| {
            let (param, value) = pair.split_once('=')?;
            (is_param(param) && !value.is_empty() && !value.contains('='))
                .then(|| (param.to_owned(), value.to_owned()))
        })
        .collect()
}

/// Parses one scope token. `Ok(None)` for a scope that is not SMART's (a
/// platform's own names, `profile`, `email`…); an error for one that starts
/// as SMART's do (`patient/`, `user/`, `system/`, `launch/`) but does not
/// follow the grammar, which the request is refused for rather than the
/// scope ignored (the spec allows either; a silent drop hides typos).
pub fn parse(token: &str) -> Result<Option<SmartScope>, SmartScopeError> {
    let fail = |reason| SmartScopeError {
        scope: token.to_owned(),
        reason,
    };
    let simple = match token {
        "launch" => Some(SmartScope::Launch),
        "openid" => Some(SmartScope::OpenId),
        "fhirUser" => Some(SmartScope::FhirUser),
        "offline_access" => Some(SmartScope::OfflineAccess),
        "online_access" => Some(SmartScope::OnlineAccess),
        _ => None,
    };
    if simple.is_some() {
        return Ok(simple);
    }
    let Some((head, rest)) = token.split_once('/') else {
        return Ok(None);
    };
    if head == "launch" {
        let (kind, role) = match rest.split_once('?') {
            None => (rest, None),
            Some((kind, query)) => match query.strip_prefix("role=") {
                Some(role) if !role.is_empty() && !role.contains(['&', '=']) => {
                    (kind, Some(role.to_owned()))
                }
                _ => return Err(fail("a launch context scope takes only ?role=<uri>")),
            },
        };
        if kind.is_empty() || !kind.chars().all(|c| c.is_ascii_lowercase()) {
            return Err(fail(
                "the context after launch/ is a resource type in lower case",
            ));
        }
        return Ok(Some(SmartScope::LaunchContext {
            kind: kind.to_owned(),
            role,
        }));
    }
    let Some(compartment) = Compartment::parse(head) else {
        return Ok(None);
    };
    let (body, query) = match rest.split_once('?') {
        Some((body, query)) => (body, Some(query)),
        None => (rest, None),
    };
    let Some((resource, permissions)) = body.split_once('.') else {
        return Err(fail("expected <ResourceType or *>.<permissions>"));
    };
    let resource = match resource {
        "*" => None,
        r if is_resource_type(r) => Some(r.to_owned()),
        _ => return Err(fail("the resource is a FHIR resource type or *")),
    };
    let (interactions, v1) = match Interactions::parse_v2(permissions) {
        Some(i) => (i, false),
        None => match Interactions::parse_v1(permissions) {
            Some(i) => (i, true),
            None => {
                return Err(fail(
                    "permissions are letters of cruds in that order, or read, write, *",
                ));
            }
        },
    };
    let constraints = match query {
        None => Vec::new(),
        Some(_) if v1 => return Err(fail("search constraints need the v2 permissions")),
        Some(q) => parse_constraints(q).ok_or_else(|| fail("constraints are param=value&…"))?,
    };
    Ok(Some(SmartScope::Resource(ResourceScope {
        compartment,
        resource,
        interactions,
        v1,
        constraints,
    })))
}

/// Whether `registered` (the scopes an app was registered with) lets it ask
/// for `requested`: the same token, or a clinical scope within a registered
/// one (`patient/*.rs` lets it ask for `patient/Observation.rs?category=…`).
pub fn within<'a>(requested: &str, registered: impl IntoIterator<Item = &'a str>) -> bool {
    let narrower = match parse(requested) {
        Ok(Some(SmartScope::Resource(r))) => Some(r),
        _ => None,
    };
    registered.into_iter().any(|r| {
        r == requested
            || narrower.as_ref().is_some_and(
                |n| matches!(parse(r), Ok(Some(SmartScope::Resource(wide))) if wide.allows(n)),
            )
    })
}

/// Plain names for the resource types a person most often meets, and for
/// the observation categories FHIR defines.
fn plain_name(resource: &str) -> Option<&'static str> {
    Some(match resource {
        "Patient" => "demographics (name, birth date, contact details)",
        "Observation" => "observations (lab results, vital signs and other measurements)",
        "Condition" => "conditions and diagnoses",
        "AllergyIntolerance" => "allergies",
        "MedicationRequest" => "prescriptions",
        "MedicationStatement" | "MedicationAdministration" | "MedicationDispense" => "medications",
        "Medication" => "medication details",
        "Immunization" => "immunizations",
        "Procedure" => "procedures",
        "Encounter" => "visits",
        "Appointment" => "appointments",
        "DiagnosticReport" => "diagnostic reports",
        "DocumentReference" => "documents and notes",
        "CarePlan" => "care plans",
        "CareTeam" => "care team",
        "Goal" => "health goals",
        "Coverage" => "insurance coverage",
        "Practitioner" | "PractitionerRole" => "clinicians",
        "Organization" => "organizations",
        "Location" => "locations",
        "Device" => "devices",
        "Provenance" => "record history (who wrote what)",
        "QuestionnaireResponse" => "questionnaire answers",
        "ServiceRequest" => "orders and referrals",
        "FamilyMemberHistory" => "family health history",
        _ => return None,
    })
}

fn category_name(value: &str) -> Option<&'static str> {
    // `system|code` or just `code`.
    let code = value.rsplit('|').next().unwrap_or(value);
    Some(match code {
        "laboratory" => "lab results",
        "vital-signs" => "vital signs",
        "social-history" => "social history",
        "imaging" => "imaging results",
        "survey" => "survey answers",
        "exam" => "exam findings",
        "therapy" => "therapy notes",
        "activity" => "activity measurements",
        "procedure" => "procedure results",
        _ => return None,
    })
}

/// "AllergyIntolerance" → "allergy intolerance records".
fn spelled_out(resource: &str) -> String {
    let mut words = String::new();
    for (i, c) in resource.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    words.push_str(" records");
    words
}

fn sentence(verbs: &[&str]) -> String {
    let mut s = match verbs {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    };
    if let Some(first) = s.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    s
}

/// What a scope lets the app do, in plain words for the consent page:
/// `patient/Observation.rs?category=…|laboratory` is "Read and search your
/// lab results". `own` is whether the person approving is the patient
/// (`your`) rather than someone acting for the patient in context.
pub fn describe(scope: &SmartScope, own: bool) -> String {
    match scope {
        SmartScope::Resource(r) => {
            // A category of observations has a name of its own; any other
            // constraint is said as written.
            let category = match (r.resource.as_deref(), r.constraints.as_slice()) {
                (Some("Observation"), [(param, value)]) if param == "category" => {
                    category_name(value)
                }
                _ => None,
            };
            let what = match (&r.resource, category) {
                (_, Some(category)) => category.to_owned(),
                (None, _) if r.constraints.is_empty() => "health records of every kind".to_owned(),
                (None, _) => "health records".to_owned(),
                (Some(t), None) => plain_name(t).map_or_else(|| spelled_out(t), str::to_owned),
            };
            let whose = match r.compartment {
                Compartment::Patient if own => format!("your {what}"),
                Compartment::Patient => format!("the patient's {what}"),
                Compartment::User => format!("{what} you have access to"),
                Compartment::System => format!("{what} of every patient the service may reach"),
            };
            let mut text = format!("{} {whose}", sentence(&r.interactions.verbs()));
            if category.is_none() && !r.constraints.is_empty() {
                let only: Vec<String> = r
                    .constraints
                    .iter()
                    .map(|(p, v)| format!("{p} {v}"))
                    .collect();
                text.push_str(&format!(" (only where {})", only.join(", ")));
            }
            text
        }
        SmartScope::Launch => {
            "Know the patient and visit it was opened for in the platform".to_owned()
        }
        SmartScope::LaunchContext { kind, .. } => match kind.as_str() {
            "patient" => "Know which patient you choose".to_owned(),
            "encounter" => "Know which visit you choose".to_owned(),
            other => format!("Know which {other} you are working on"),
        },
        SmartScope::OpenId => "Know that it is you who signed in".to_owned(),
        SmartScope::FhirUser => "Know your identity in the health record".to_owned(),
        SmartScope::OfflineAccess => {
            "Keep access after you close the app, until you revoke it".to_owned()
        }
        SmartScope::OnlineAccess => "Keep access while you stay signed in".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn resource(s: &str) -> ResourceScope {
        match parse(s) {
            Ok(Some(SmartScope::Resource(r))) => r,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn clinical_scopes_parse_in_both_versions() {
        let lab = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory";
        // (scope, compartment, resource, interactions, v1, constraints)
        type Case<'a> = (&'a str, Compartment, Option<&'a str>, &'a str, bool, usize);
        let cases: &[Case<'_>] = &[
            ("patient/*.rs", Compartment::Patient, None, "rs", false, 0),
            ("user/*.cruds", Compartment::User, None, "cruds", false, 0),
            (
                "system/Patient.r",
                Compartment::System,
                Some("Patient"),
                "r",
                false,
                0,
            ),
            (
                "patient/Observation.cu",
                Compartment::Patient,
                Some("Observation"),
                "cu",
                false,
                0,
            ),
            ("patient/*.read", Compartment::Patient, None, "rs", true, 0),
            (
                "user/MedicationRequest.write",
                Compartment::User,
                Some("MedicationRequest"),
                "cud",
                true,
                0,
            ),
            ("user/*.*", Compartment::User, None, "cruds", true, 0),
            (
                lab,
                Compartment::Patient,
                Some("Observation"),
                "rs",
                false,
                1,
            ),
            (
                "patient/Observation.rs?category=laboratory&code:in=http://x.example/vs",
                Compartment::Patient,
                Some("Observation"),
                "rs",
                false,
                2,
            ),
        ];
        for &(s, compartment, res, letters, v1, n) in cases {
            let r = resource(s);
            assert_eq!(r.compartment, compartment, "{s}");
            assert_eq!(r.resource.as_deref(), res, "{s}");
            assert_eq!(r.interactions.letters(), letters, "{s}");
            assert_eq!(r.v1, v1, "{s}");
            assert_eq!(r.constraints.len(), n, "{s}");
            assert_eq!(r.to_string(), s, "written back as asked");
        }
    }

    #[test]
    fn malformed_smart_scopes_are_errors_and_other_scopes_are_not_smart() {
        for bad in [
            "patient/Observation.dus",
            "patient/Observation.rr",
            "patient/Observation.",
            "patient/Observation",
            "patient/observation.rs",
            "patient/Obs3rvation.rs",
            "patient/*.readwrite",
            "patient/*.read?category=laboratory",
            "patient/Observation.rs?category",
            "patient/Observation.rs?=laboratory",
            "patient/Observation.rs?category=",
            "patient/Observation.rs?category=a=b",
            "patient/Observation.rs?",
            "launch/",
            "launch/Patient",
            "launch/patient?type=x",
            "launch/patient?role=",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
        for other in [
            "profile_read",
            "email",
            "profile",
            "patients/*.rs",
            "read",
            "a/b.c",
        ] {
            assert_eq!(parse(other), Ok(None), "{other}");
        }
    }

    #[test]
    fn launch_identity_and_refresh_scopes() {
        let cases = [
            ("launch", SmartScope::Launch),
            ("openid", SmartScope::OpenId),
            ("fhirUser", SmartScope::FhirUser),
            ("offline_access", SmartScope::OfflineAccess),
            ("online_access", SmartScope::OnlineAccess),
            (
                "launch/patient",
                SmartScope::LaunchContext {
                    kind: "patient".into(),
                    role: None,
                },
            ),
            (
                "launch/encounter",
                SmartScope::LaunchContext {
                    kind: "encounter".into(),
                    role: None,
                },
            ),
            (
                "launch/diagnosticreport?role=https://example.org/role/source",
                SmartScope::LaunchContext {
                    kind: "diagnosticreport".into(),
                    role: Some("https://example.org/role/source".into()),
                },
            ),
        ];
        for (s, expected) in cases {
            assert_eq!(parse(s), Ok(Some(expected.clone())), "{s}");
            assert_eq!(expected.to_string(), s);
        }
    }

    #[test]
    fn a_registered_scope_allows_narrower_requests() {
        let registered = [
            "patient/*.rs",
            "user/Observation.cruds?category=laboratory",
            "launch/patient",
        ];
        let cases = [
            ("patient/*.rs", true),
            ("patient/*.r", true),
            ("patient/Observation.rs", true),
            ("patient/Observation.rs?category=laboratory", true),
            ("patient/*.read", true),
            ("patient/Observation.read", true),
            ("patient/*.cruds", false),
            ("patient/Observation.c", false),
            ("patient/*.*", false),
            ("user/Observation.rs", false),
            ("user/Observation.rs?category=laboratory", true),
            ("user/Observation.rs?category=laboratory&code=1234-5", true),
            ("user/Observation.rs?category=vital-signs", false),
            ("user/Condition.rs?category=laboratory", false),
            ("system/*.rs", false),
            ("launch/patient", true),
            ("launch/encounter", false),
            ("launch", false),
        ];
        for (requested, ok) in cases {
            assert_eq!(within(requested, registered), ok, "{requested}");
        }
    }

    #[test]
    fn consent_words() {
        let d = |s: &str, own| describe(&parse(s).unwrap().unwrap(), own);
        assert_eq!(
            d(
                "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
                true
            ),
            "Read and search your lab results"
        );
        assert_eq!(
            d("patient/*.rs", true),
            "Read and search your health records of every kind"
        );
        assert_eq!(
            d("patient/*.read", false),
            "Read and search the patient's health records of every kind"
        );
        assert_eq!(
            d("user/MedicationRequest.cud", true),
            "Create, update and delete prescriptions you have access to"
        );
        assert_eq!(
            d("patient/ImagingStudy.r", true),
            "Read your imaging study records"
        );
        assert_eq!(
            d("patient/Condition.rs?clinical-status=active", true),
            "Read and search your conditions and diagnoses (only where clinical-status active)"
        );
        assert_eq!(
            d("offline_access", true),
            "Keep access after you close the app, until you revoke it"
        );
    }

    #[test]
    fn a_context_is_stored_whole_and_answered_without_aud() {
        let context = SmartContext {
            patient: Some("123".into()),
            fhir_context: vec![serde_json::json!({ "reference": "Appointment/9" })],
            need_patient_banner: Some(false),
            ..SmartContext::for_server("https://fhir.example.com/r4")
        };
        assert_eq!(
            SmartContext::from_stored(&context.to_stored()).unwrap(),
            context
        );
        assert_eq!(
            serde_json::Value::Object(context.launch_parameters()),
            serde_json::json!({
                "patient": "123",
                "fhirContext": [{ "reference": "Appointment/9" }],
                "need_patient_banner": false,
            })
        );
        assert!(
            SmartContext::for_server("https://f.example")
                .with_fhir_user("Practitioner/1")
                .launch_parameters()
                .is_empty()
        );
        assert_eq!(
            SmartContext::for_server("https://f.example/r4")
                .with_fhir_user("Practitioner/1")
                .fhir_user
                .as_deref(),
            Some("https://f.example/r4/Practitioner/1")
        );
    }

    #[test]
    fn system_scopes_are_for_clients_and_the_rest_of_smart_for_people() {
        for (token, client, person) in [
            ("system/Observation.rs", true, false),
            ("system/*.read", true, false),
            ("patient/*.rs", false, true),
            ("user/Patient.r", false, true),
            ("launch/patient", false, true),
            ("launch", false, true),
            ("openid", true, true),
            ("profile_read", true, true),
        ] {
            assert_eq!(grantable_to(token, Holder::Client), client, "{token}");
            assert_eq!(grantable_to(token, Holder::Person), person, "{token}");
        }
    }

    #[test]
    fn a_smart_grant_is_refreshed_only_with_offline_or_online_access() {
        let smart = SmartContext::for_server("https://f.example");
        for (context, scope, refresh) in [
            (None, "profile_read", true),
            (Some(&smart), "openid patient/*.rs", false),
            (Some(&smart), "openid patient/*.rs offline_access", true),
            (Some(&smart), "online_access patient/*.rs", true),
        ] {
            assert_eq!(
                issues_refresh(context, scope.split(' ')),
                refresh,
                "{scope}"
            );
        }
    }

    #[test]
    fn a_launch_admits_only_its_app_its_server_once_and_in_time() {
        const FHIR: &str = "https://fhir.example.com/r4";
        let launch = Launch {
            client_id: "app-1".into(),
            user_id: Some("usr-1".into()),
            context: SmartContext {
                patient: Some("123".into()),
                ..SmartContext::for_server(FHIR)
            },
            created_by: "app-ehr".into(),
            created_at: 1_000,
            expires_at: 1_000 + LAUNCH_TTL,
            consumed_at: None,
        };
        let used = Launch {
            consumed_at: Some(1_010),
            ..launch.clone()
        };
        let unusable = Err(OAuthError::invalid_request(UNUSABLE_LAUNCH));
        // (launch, client, aud, now, answer)
        let cases = [
            (&launch, "app-1", Some(FHIR), 1_001, Ok(())),
            (&launch, "app-1", Some(FHIR), 1_000 + LAUNCH_TTL - 1, Ok(())),
            (
                &launch,
                "app-1",
                Some(FHIR),
                1_000 + LAUNCH_TTL,
                unusable.clone(),
            ),
            (&launch, "app-2", Some(FHIR), 1_001, unusable.clone()),
            (&used, "app-1", Some(FHIR), 1_011, unusable.clone()),
            (
                &launch,
                "app-1",
                Some("https://other.example/r4"),
                1_001,
                Err(OAuthError::invalid_request(
                    "aud is not the FHIR server the app was launched with (iss)",
                )),
            ),
        ];
        for (l, client, aud, now, answer) in cases {
            assert_eq!(l.admits(client, aud, now), answer, "{client} {aud:?} {now}");
        }
        assert!(launch.is_for("usr-1"));
        assert!(!launch.is_for("usr-2"));
        let anyone = Launch {
            user_id: None,
            ..launch
        };
        assert!(anyone.is_for("usr-2"));
    }

    #[test]
    fn a_launch_context_names_fhir_ids_and_references() {
        let ok = SmartContext {
            patient: Some("Patient-123.a".into()),
            encounter: Some("e1".into()),
            fhir_context: vec![
                serde_json::json!({ "reference": "Appointment/9" }),
                serde_json::json!({ "canonical": "http://x.example/Questionnaire/q", "role": "launch" }),
                serde_json::json!({ "identifier": { "value": "7" }, "type": "ServiceRequest" }),
            ],
            smart_style_url: Some("https://ehr.example/style.json".into()),
            intent: Some("reconcile-medications".into()),
            ..SmartContext::for_server("https://fhir.example.com/r4")
        };
        assert_eq!(check_context(&ok), Ok(()));
        let bad = |change: fn(&mut SmartContext)| {
            let mut c = ok.clone();
            change(&mut c);
            check_context(&c).unwrap_err()
        };
        assert!(bad(|c| c.patient = Some("a/b".into())).starts_with("patient"));
        assert!(bad(|c| c.patient = Some(String::new())).starts_with("patient"));
        assert!(bad(|c| c.encounter = Some("x".repeat(65))).starts_with("encounter"));
        assert!(
            bad(|c| c.fhir_context = vec![serde_json::json!("Appointment/9")])
                .contains("fhirContext")
        );
        assert!(
            bad(|c| c.fhir_context = vec![serde_json::json!({ "role": "x" })])
                .contains("fhirContext")
        );
        assert!(
            bad(|c| c.fhir_context = vec![serde_json::json!({ "reference": 9 })])
                .contains("fhirContext")
        );
        assert!(
            bad(|c| c.smart_style_url = Some("http://ehr.example/s".into()))
                .contains("smart_style_url")
        );
        assert!(bad(|c| c.intent = Some(String::new())).starts_with("intent"));
    }

    #[test]
    fn a_patient_is_needed_for_patient_scopes_and_launch_patient() {
        for (scope, needs) in [
            ("openid patient/Observation.rs", true),
            ("launch/patient openid", true),
            ("patient/*.read", true),
            ("user/*.rs launch/encounter openid fhirUser", false),
            ("system/*.rs", false),
            ("launch profile_read", false),
        ] {
            assert_eq!(needs_patient(scope.split(' ')), needs, "{scope}");
        }
    }

    #[test]
    fn fhir_users_and_patient_links_name_fhir_resources() {
        for ok in [
            "Practitioner/123",
            "Patient/p-1.a",
            "RelatedPerson/9",
            "PractitionerRole/x",
            "Person/1",
        ] {
            assert_eq!(check_fhir_user(ok), Ok(()), "{ok}");
        }
        for bad in [
            "123",
            "Observation/1",
            "Practitioner/",
            "Practitioner/a/b",
            "https://f.example/Practitioner/1",
        ] {
            assert!(check_fhir_user(bad).is_err(), "{bad}");
        }
        let link = |id: &str, display: &str| PatientLink {
            patient_id: id.into(),
            display: display.into(),
        };
        assert_eq!(check_patient_link(&link("123", "Jane Doe")), Ok(()));
        assert!(check_patient_link(&link("Patient/123", "Jane Doe")).is_err());
        assert!(check_patient_link(&link("123", "")).is_err());
        assert!(check_patient_link(&link("123", " Jane")).is_err());
    }

    fn clinical() -> impl Strategy<Value = String> {
        let compartment = prop_oneof![Just("patient"), Just("user"), Just("system")];
        let resource = prop_oneof![Just("*".to_owned()), "[A-Z][a-zA-Z]{0,20}"];
        let letters = (1u8..32).prop_map(|bits| Interactions(bits).letters());
        let constraints =
            proptest::collection::vec(("[a-z][a-z:._-]{0,10}", "[a-zA-Z0-9|:/._-]{1,20}"), 0..3);
        (compartment, resource, letters, constraints).prop_map(|(c, r, l, cs)| {
            let mut s = format!("{c}/{r}.{l}");
            for (i, (p, v)) in cs.iter().enumerate() {
                s.push(if i == 0 { '?' } else { '&' });
                s.push_str(&format!("{p}={v}"));
            }
            s
        })
    }

    proptest! {
        #[test]
        fn every_well_formed_clinical_scope_parses_and_is_written_back(s in clinical()) {
            let r = resource(&s);
            prop_assert_eq!(r.to_string(), s);
            prop_assert!(r.allows(&r));
        }

        #[test]
        fn parsing_never_panics(s in "[!#-\\[\\]-~]{0,60}") {
            let _ = parse(&s);
        }

        #[test]
        fn dropping_interactions_or_adding_constraints_narrows(
            s in clinical(),
            keep in 1u8..32,
            extra in ("[a-z]{1,8}", "[a-z0-9]{1,8}"),
        ) {
            let wide = resource(&s);
            let mut narrow = wide.clone();
            let kept = Interactions(wide.interactions.0 & keep);
            prop_assume!(kept.0 != 0);
            narrow.interactions = kept;
            narrow.constraints.push(extra);
            prop_assert!(wide.allows(&narrow));
            prop_assert!(within(&narrow.to_string(), [s.as_str()]));
            // A constraint the wide scope lacks cannot be dropped again.
            let added = narrow.constraints.last().unwrap();
            if !wide.constraints.contains(added) {
                prop_assert!(!narrow.allows(&wide));
            }
        }

        #[test]
        fn allowing_is_transitive(a in clinical(), b in clinical(), c in clinical()) {
            let (a, b, c) = (resource(&a), resource(&b), resource(&c));
            if a.allows(&b) && b.allows(&c) {
                prop_assert!(a.allows(&c));
            }
        }
    }
}
