//! Domain events: the one vocabulary in which healthgate says what happened.
//! Every event goes to the audit trail; the ones that concern a partner app
//! are also delivered to its webhook.

use std::fmt;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    LoginSucceeded,
    LoginFailed,
    Logout,
    ConsentGranted,
    ConsentDenied,
    ConsentRevoked,
    CodeIssued,
    CodeReplayed,
    TokenIssued,
    TokenRefreshed,
    TokenReuseDetected,
    TokenFamilyRevoked,
    TokenRevoked,
    ClientCreated,
    ClientUpdated,
    ClientSecretRotated,
    ClientDeleted,
    UserCreated,
    UserLocked,
    UserDeleted,
    OrganizationCreated,
    MemberAdded,
    MemberRemoved,
    IntegrationConnected,
    IntegrationPending,
    IntegrationActivated,
    IntegrationDeactivated,
    ConnectCodeIssued,
    ConnectCodeReplayed,
    ApiKeyCreated,
    ApiKeyRevoked,
    /// A person changed their display name or email on their account page.
    UserUpdated,
    /// A person changed their own password (their other sessions end).
    PasswordChanged,
    /// A password change refused because the current password was wrong.
    PasswordChangeFailed,
    /// A person signed sessions out from their account page: one, every
    /// other one, or all (`data.which`).
    SessionEnded,
    /// An operator lifted an account's locks (`data.cleared`: which of
    /// `operator_lock` and `failed_sign_ins`).
    UserUnlocked,
    UserPasswordReset,
    OperatorGranted,
    OperatorRevoked,
    ClientSuspended,
    ClientRestored,
    MemberRoleChanged,
    WebhookUnmuted,
    /// A client presented credentials that did not hold (never the secret
    /// itself: the client id and the address).
    ClientAuthFailed,
    /// A partner asked for another partner's user, integration, key or
    /// token, and was refused.
    AccessRefused,
    /// A username's failed sign-ins reached the point where each further
    /// attempt waits (`data`: the username as typed, failures, the wait).
    SignInThrottled,
    /// A username was locked for a while after too many failed sign-ins
    /// (`data`: the username, failures, until when).
    SignInLocked,
    /// One address failed to sign in as many different usernames within a
    /// window (`data`: how many, the window).
    SignInBurst,
    /// A client id was refused for a while after too many failed
    /// authentications or `invalid_grant` answers (`data`: failures, until).
    ClientThrottled,
    /// An app asked to be listed in the integration directory, or an
    /// approved app was sent back for review by a change of what practices
    /// rely on (`data.changed`: the fields).
    ListingRequested,
    /// The developer withdrew the request, or took the listed app out.
    ListingWithdrawn,
    /// An operator approved the listing (`data`: what was approved).
    ListingApproved,
    /// An operator declined the listing (`data.reason`).
    ListingRejected,
    /// An operator took a listed app out of the directory (`data.reason`).
    ClientUnlisted,
    /// A person added a second factor (`data`: its kind and label).
    MfaEnrolled,
    /// A person removed one of their second factors (`data`: kind, label).
    MfaRemoved,
    /// An operator removed every second factor and recovery code of a
    /// person (`data.factors`: how many).
    MfaReset,
    /// A person was given a fresh set of recovery codes (the old ones no
    /// longer work).
    RecoveryCodesReplaced,
    /// A recovery code stood in for a second factor (`data.left`).
    RecoveryCodeUsed,
    /// A wrong second factor after the right password (counted on the
    /// username's sign-in run, like a wrong password).
    SecondFactorFailed,
    /// A signed-in person gave a second factor again because an app asked
    /// for a fresher or stronger sign-in (`data.amr`).
    SteppedUp,
    /// A link to verify a person's email address was queued for sending.
    EmailVerificationSent,
    /// A person followed the link and their address is verified.
    EmailVerified,
    /// Someone asked for a password reset link for an address (`data`:
    /// how many accounts have it verified; the answer they got is the same
    /// either way). One event per request, written when the mail worker
    /// handles it.
    PasswordResetRequested,
    /// A person chose a new password by a reset link: every session ended
    /// and every token family of theirs was revoked (`data`: how many).
    PasswordResetByLink,
    /// A security notice (a password or factor change) was queued for a
    /// person's verified address (`data.what`).
    SecurityNoticeQueued,
    /// A message was handed to the mail server (`data`: its kind, attempts).
    EmailDelivered,
    /// A message could not be delivered and was given up (`data`: its
    /// kind, attempts, the last error; never the body).
    EmailDeliveryFailed,
    /// A SMART launcher (the platform acting as the EHR) made an EHR launch
    /// of an app (`data`: the FHIR server, the patient and encounter in
    /// context; never the launch value).
    SmartLaunchCreated,
    /// A patient record was linked to a person, who may then pick it in a
    /// SMART standalone launch (`data`: the patient id).
    PatientLinked,
    /// A patient record was unlinked from a person (`data`: the patient id).
    PatientUnlinked,
    /// An operator issued an initial access token for dynamic client
    /// registration (`data`: its id, label, owner and expiry; never the
    /// token).
    RegistrationTokenCreated,
    /// An operator revoked an initial access token (`data`: its id).
    RegistrationTokenRevoked,
    /// An app's registration access token (RFC 7592) was replaced, by its
    /// own update at the registration endpoint.
    RegistrationAccessRotated,
}

impl EventKind {
    pub const ALL: &'static [EventKind] = &[
        Self::LoginSucceeded,
        Self::LoginFailed,
        Self::Logout,
        Self::ConsentGranted,
        Self::ConsentDenied,
        Self::ConsentRevoked,
        Self::CodeIssued,
        Self::CodeReplayed,
        Self::TokenIssued,
        Self::TokenRefreshed,
        Self::TokenReuseDetected,
        Self::TokenFamilyRevoked,
        Self::TokenRevoked,
        Self::ClientCreated,
        Self::ClientUpdated,
        Self::ClientSecretRotated,
        Self::ClientDeleted,
        Self::UserCreated,
        Self::UserLocked,
        Self::UserDeleted,
        Self::OrganizationCreated,
        Self::MemberAdded,
        Self::MemberRemoved,
        Self::IntegrationConnected,
        Self::IntegrationPending,
        Self::IntegrationActivated,
        Self::IntegrationDeactivated,
        Self::ConnectCodeIssued,
        Self::ConnectCodeReplayed,
        Self::ApiKeyCreated,
        Self::ApiKeyRevoked,
        Self::UserUpdated,
        Self::PasswordChanged,
        Self::PasswordChangeFailed,
        Self::SessionEnded,
        Self::UserUnlocked,
        Self::UserPasswordReset,
        Self::OperatorGranted,
        Self::OperatorRevoked,
        Self::ClientSuspended,
        Self::ClientRestored,
        Self::MemberRoleChanged,
        Self::WebhookUnmuted,
        Self::ClientAuthFailed,
        Self::AccessRefused,
        Self::SignInThrottled,
        Self::SignInLocked,
        Self::SignInBurst,
        Self::ClientThrottled,
        Self::ListingRequested,
        Self::ListingWithdrawn,
        Self::ListingApproved,
        Self::ListingRejected,
        Self::ClientUnlisted,
        Self::MfaEnrolled,
        Self::MfaRemoved,
        Self::MfaReset,
        Self::RecoveryCodesReplaced,
        Self::RecoveryCodeUsed,
        Self::SecondFactorFailed,
        Self::SteppedUp,
        Self::EmailVerificationSent,
        Self::EmailVerified,
        Self::PasswordResetRequested,
        Self::PasswordResetByLink,
        Self::SecurityNoticeQueued,
        Self::EmailDelivered,
        Self::EmailDeliveryFailed,
        Self::SmartLaunchCreated,
        Self::PatientLinked,
        Self::PatientUnlinked,
        Self::RegistrationTokenCreated,
        Self::RegistrationTokenRevoked,
        Self::RegistrationAccessRotated,
    ];

    /// The event's type as written to the audit trail and webhooks.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoginSucceeded => "login.succeeded",
            Self::LoginFailed => "login.failed",
            Self::Logout => "logout",
            Self::ConsentGranted => "consent.granted",
            Self::ConsentDenied => "consent.denied",
            Self::ConsentRevoked => "consent.revoked",
            Self::CodeIssued => "code.issued",
            Self::CodeReplayed => "code.replayed",
            Self::TokenIssued => "token.issued",
            Self::TokenRefreshed => "token.refreshed",
            Self::TokenReuseDetected => "token.reuse_detected",
            Self::TokenFamilyRevoked => "token.family_revoked",
            Self::TokenRevoked => "token.revoked",
            Self::ClientCreated => "client.created",
            Self::ClientUpdated => "client.updated",
            Self::ClientSecretRotated => "client.secret_rotated",
            Self::ClientDeleted => "client.deleted",
            Self::UserCreated => "user.created",
            Self::UserLocked => "user.locked",
            Self::UserDeleted => "user.deleted",
            Self::OrganizationCreated => "organization.created",
            Self::MemberAdded => "organization.member_added",
            Self::MemberRemoved => "organization.member_removed",
            Self::IntegrationConnected => "integration.connected",
            Self::IntegrationPending => "integration.pending",
            Self::IntegrationActivated => "integration.activated",
            Self::IntegrationDeactivated => "integration.deactivated",
            Self::ConnectCodeIssued => "integration.code_issued",
            Self::ConnectCodeReplayed => "integration.code_replayed",
            Self::ApiKeyCreated => "api_key.created",
            Self::ApiKeyRevoked => "api_key.revoked",
            Self::UserUpdated => "user.updated",
            Self::PasswordChanged => "user.password_changed",
            Self::PasswordChangeFailed => "user.password_change_failed",
            Self::SessionEnded => "session.ended",
            Self::UserUnlocked => "user.unlocked",
            Self::UserPasswordReset => "user.password_reset",
            Self::OperatorGranted => "user.operator_granted",
            Self::OperatorRevoked => "user.operator_revoked",
            Self::ClientSuspended => "client.suspended",
            Self::ClientRestored => "client.restored",
            Self::MemberRoleChanged => "organization.member_role_changed",
            Self::WebhookUnmuted => "webhook.unmuted",
            Self::ClientAuthFailed => "client.authentication_failed",
            Self::SignInThrottled => "login.throttled",
            Self::SignInLocked => "login.locked",
            Self::SignInBurst => "login.burst",
            Self::ClientThrottled => "client.throttled",
            Self::AccessRefused => "access.refused",
            Self::ListingRequested => "client.listing_requested",
            Self::ListingWithdrawn => "client.listing_withdrawn",
            Self::ListingApproved => "client.listing_approved",
            Self::ListingRejected => "client.listing_rejected",
            Self::ClientUnlisted => "client.unlisted",
            Self::MfaEnrolled => "mfa.enrolled",
            Self::MfaRemoved => "mfa.removed",
            Self::MfaReset => "mfa.reset",
            Self::RecoveryCodesReplaced => "mfa.recovery_codes_replaced",
            Self::RecoveryCodeUsed => "mfa.recovery_code_used",
            Self::SecondFactorFailed => "login.second_factor_failed",
            Self::SteppedUp => "login.stepped_up",
            Self::EmailVerificationSent => "email.verification_sent",
            Self::EmailVerified => "email.verified",
            Self::PasswordResetRequested => "password.reset_requested",
            Self::PasswordResetByLink => "password.reset",
            Self::SecurityNoticeQueued => "email.notice_queued",
            Self::EmailDelivered => "email.delivered",
            Self::EmailDeliveryFailed => "email.delivery_failed",
            Self::SmartLaunchCreated => "smart.launch_created",
            Self::PatientLinked => "user.patient_linked",
            Self::PatientUnlinked => "user.patient_unlinked",
            Self::RegistrationTokenCreated => "registration_token.created",
            Self::RegistrationTokenRevoked => "registration_token.revoked",
            Self::RegistrationAccessRotated => "client.registration_access_rotated",
        }
    }

    /// Whether the partner app named in the event is told by webhook.
    /// Routine traffic (logins, each token issue) is audited, not pushed.
    /// An operator's decision about its directory listing is pushed (the
    /// developer also reads it on the app's page); the developer's own
    /// request or withdrawal is not.
    pub fn notifies_partner(self) -> bool {
        matches!(
            self,
            Self::ConsentGranted
                | Self::ConsentRevoked
                | Self::TokenFamilyRevoked
                | Self::TokenReuseDetected
                | Self::CodeReplayed
                | Self::ClientSecretRotated
                | Self::IntegrationConnected
                | Self::IntegrationPending
                | Self::IntegrationActivated
                | Self::IntegrationDeactivated
                | Self::ConnectCodeReplayed
                | Self::ApiKeyCreated
                | Self::ApiKeyRevoked
                | Self::ClientSuspended
                | Self::ClientRestored
                | Self::ClientThrottled
                | Self::ListingApproved
                | Self::ListingRejected
                | Self::ClientUnlisted
        )
    }
}

impl EventKind {
    /// Whether an operator should hear of it at once (a `WARN` log line
    /// besides the audit trail): guessing, replay, reuse, locks, throttles,
    /// suspensions and mail that could not be sent. The rest is the routine
    /// the audit trail keeps.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            Self::LoginFailed
                | Self::SecondFactorFailed
                | Self::PasswordChangeFailed
                | Self::SignInThrottled
                | Self::SignInLocked
                | Self::SignInBurst
                | Self::UserLocked
                | Self::ClientAuthFailed
                | Self::ClientThrottled
                | Self::ClientSuspended
                | Self::AccessRefused
                | Self::CodeReplayed
                | Self::ConnectCodeReplayed
                | Self::TokenReuseDetected
                | Self::TokenFamilyRevoked
                | Self::EmailDeliveryFailed
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the attempt the event records succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALL` lists every kind in declaration order, so `kind as usize` is
    /// its place in `ALL` (the store counts events in an array by it).
    #[test]
    fn all_is_in_declaration_order() {
        for (i, kind) in EventKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i, "{kind}");
        }
    }

    #[test]
    fn event_names_are_unique_and_dotted() {
        let mut names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count);
        assert!(EventKind::IntegrationConnected.notifies_partner());
        assert!(!EventKind::LoginSucceeded.notifies_partner());
        // A partner hears when an operator suspends or restores its app.
        assert!(EventKind::ClientSuspended.notifies_partner());
        assert!(EventKind::ClientRestored.notifies_partner());
        // An operator's decision on its listing too; its own request not.
        for kind in [
            EventKind::ListingApproved,
            EventKind::ListingRejected,
            EventKind::ClientUnlisted,
        ] {
            assert!(kind.notifies_partner(), "{kind}");
        }
        assert!(!EventKind::ListingRequested.notifies_partner());
        assert!(!EventKind::ListingWithdrawn.notifies_partner());
    }
}
