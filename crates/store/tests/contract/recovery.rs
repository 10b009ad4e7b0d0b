//! Recovery by email in the store: links consumed once, an address change
//! unverifying it, a reset ending every session and token family in one
//! transaction, reset requests and mail claimed by one worker at a time,
//! and a message's body blanked once it is sent or given up.

use healthgate_core::owner::AuthorizationLevel;
use healthgate_core::recovery::{LinkPurpose, MailKind};
use healthgate_core::secret::mint;
use healthgate_store::{MailOutcome, NewLink, NewMail, Store};

use super::{
    NOW, access_revoked, backends, context, events_of_kind, granted, named_client, session_of, user,
};

fn mail<'a>(kind: MailKind, user_id: &'a str, to: &'a str, body: &'a str) -> NewMail<'a> {
    NewMail {
        kind,
        user_id: Some(user_id),
        recipient: to,
        subject: "Subject",
        body,
        give_up_at: NOW + 1800,
    }
}

/// Stores a link of `purpose` for `user_id` to `email`, expiring at
/// `expires_at`, with its message; returns the link's digest.
async fn link(
    s: &Store,
    purpose: LinkPurpose,
    user_id: &str,
    email: &str,
    expires_at: i64,
) -> String {
    let secret = mint(purpose.secret_kind());
    let kind = match purpose {
        LinkPurpose::VerifyEmail => MailKind::Verification,
        LinkPurpose::ResetPassword => MailKind::Reset,
    };
    s.queue_link(
        &NewLink {
            digest: &secret.digest,
            purpose,
            user_id,
            email,
            expires_at,
        },
        &mail(kind, user_id, email, &secret.value),
        &healthgate_store::Event::new(healthgate_core::event::EventKind::EmailVerificationSent)
            .subject(user_id),
        NOW,
    )
    .await
    .unwrap();
    secret.digest
}

#[tokio::test]
async fn an_address_is_verified_once_by_its_link_and_unverified_by_a_change() {
    for b in backends().await {
        let s = &b.store;
        let mut alice = user("alice");
        alice.email = Some("alice@example.org".into());
        s.insert_user(&alice).await.unwrap();

        let d = link(
            s,
            LinkPurpose::VerifyEmail,
            &alice.id,
            "alice@example.org",
            NOW + 100,
        )
        .await;
        // A verification link is no reset link.
        assert!(
            s.live_link(&d, LinkPurpose::ResetPassword, NOW)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            s.live_link(&d, LinkPurpose::VerifyEmail, NOW)
                .await
                .unwrap()
                .is_some()
        );
        // Expired: nothing changes.
        assert!(s.verify_email(&d, None, NOW + 100).await.unwrap().is_none());
        let d = link(
            s,
            LinkPurpose::VerifyEmail,
            &alice.id,
            "alice@example.org",
            NOW + 100,
        )
        .await;
        let spare = link(
            s,
            LinkPurpose::VerifyEmail,
            &alice.id,
            "alice@example.org",
            NOW + 100,
        )
        .await;
        let done = s
            .verify_email(&d, Some("192.0.2.1"), NOW + 5)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (done.user_id.as_str(), done.email.as_str()),
            (alice.id.as_str(), "alice@example.org")
        );
        let now = s.user(&alice.id).await.unwrap().unwrap();
        assert_eq!(now.email_verified_at, Some(NOW + 5), "{}", b.name);
        assert_eq!(now.verified_email(), Some("alice@example.org"));
        // Replay, and the other link of the account, change nothing.
        assert!(s.verify_email(&d, None, NOW + 6).await.unwrap().is_none());
        assert!(
            s.verify_email(&spare, None, NOW + 6)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(events_of_kind(s, "email.verified").await.len(), 1);

        // The same address again keeps it verified; another one is not.
        s.set_email(&alice.id, Some("alice@example.org"), NOW + 7)
            .await
            .unwrap();
        assert!(
            s.user(&alice.id)
                .await
                .unwrap()
                .unwrap()
                .email_verified_at
                .is_some()
        );
        let pending = link(
            s,
            LinkPurpose::VerifyEmail,
            &alice.id,
            "alice@example.org",
            NOW + 100,
        )
        .await;
        s.update_profile(&alice.id, None, Some("new@example.org"), None, NOW + 8)
            .await
            .unwrap();
        let now = s.user(&alice.id).await.unwrap().unwrap();
        assert_eq!(now.email_verified_at, None, "{}", b.name);
        // A link to the old address no longer works.
        assert!(
            s.live_link(&pending, LinkPurpose::VerifyEmail, NOW + 9)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            s.verify_email(&pending, None, NOW + 9)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            s.user(&alice.id).await.unwrap().unwrap().email_verified_at,
            None
        );
        // A partner's change unverifies it too.
        let d = link(
            s,
            LinkPurpose::VerifyEmail,
            &alice.id,
            "new@example.org",
            NOW + 100,
        )
        .await;
        s.verify_email(&d, None, NOW + 10).await.unwrap().unwrap();
        s.set_email(&alice.id, Some("other@example.org"), NOW + 11)
            .await
            .unwrap();
        assert_eq!(
            s.user(&alice.id).await.unwrap().unwrap().email_verified_at,
            None
        );
        b.cleanup().await;
    }
}

#[tokio::test]
async fn a_reset_by_link_works_once_and_ends_every_session_and_token_family() {
    for b in backends().await {
        let s = &b.store;
        let app = named_client(s, "Partner", AuthorizationLevel::User).await;
        let mut alice = user("alice");
        alice.email = Some("Alice@Example.org".into());
        alice.password_hash = Some("old-hash".into());
        s.insert_user(&alice).await.unwrap();
        let mut bob = user("bob");
        bob.email = Some("bob@example.org".into());
        s.insert_user(&bob).await.unwrap();
        let d = link(
            s,
            LinkPurpose::VerifyEmail,
            &alice.id,
            "Alice@Example.org",
            NOW + 100,
        )
        .await;
        s.verify_email(&d, None, NOW).await.unwrap().unwrap();

        // Found without regard to case.
        let found = s.users_with_email("alice@example.org").await.unwrap();
        assert_eq!(found.len(), 1, "{}", b.name);
        assert_eq!(found[0].id, alice.id);

        // An unverified address's link does not work.
        let bobs = link(
            s,
            LinkPurpose::ResetPassword,
            &bob.id,
            "bob@example.org",
            NOW + 1800,
        )
        .await;
        assert!(
            s.live_link(&bobs, LinkPurpose::ResetPassword, NOW)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            s.reset_password_by_link(&bobs, "h", None, None, NOW)
                .await
                .unwrap()
                .is_none()
        );

        let tokens = granted(
            s,
            &app,
            &alice,
            "profile_read",
            context(&alice, None, false),
            NOW + 1,
        )
        .await;
        let theirs = granted(
            s,
            &app,
            &bob,
            "profile_read",
            context(&bob, None, false),
            NOW + 1,
        )
        .await;
        for (i, digest) in ["s1", "s2"].into_iter().enumerate() {
            s.replace_session(
                None,
                &session_of(digest, &alice.id, NOW + i as i64, NOW + 3600),
            )
            .await
            .unwrap();
        }
        s.replace_session(None, &session_of("s3", &bob.id, NOW, NOW + 3600))
            .await
            .unwrap();
        s.record_failure(
            healthgate_store::ThrottleKind::SignIn,
            "alice",
            NOW,
            NOW - 900,
        )
        .await
        .unwrap();

        let first = link(
            s,
            LinkPurpose::ResetPassword,
            &alice.id,
            "Alice@Example.org",
            NOW + 1800,
        )
        .await;
        let second = link(
            s,
            LinkPurpose::ResetPassword,
            &alice.id,
            "Alice@Example.org",
            NOW + 1800,
        )
        .await;
        let notice = mail(MailKind::Notice, &alice.id, "Alice@Example.org", "changed");
        let live = s
            .live_link(&second, LinkPurpose::ResetPassword, NOW + 10)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(live.user_id, alice.id);
        let done = s
            .reset_password_by_link(
                &second,
                "new-hash",
                Some(&notice),
                Some("192.0.2.1"),
                NOW + 10,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (done.sessions_ended, done.families_revoked),
            (2, 1),
            "{}",
            b.name
        );
        let now = s.user(&alice.id).await.unwrap().unwrap();
        assert_eq!(now.password_hash.as_deref(), Some("new-hash"));
        assert!(
            s.sessions_of_user(&alice.id, NOW + 11)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            s.sessions_of_user(&bob.id, NOW + 11).await.unwrap().len(),
            1
        );
        assert!(access_revoked(s, &tokens).await);
        assert!(!access_revoked(s, &theirs).await);
        assert!(
            s.failure_run(healthgate_store::ThrottleKind::SignIn, "alice")
                .await
                .unwrap()
                .is_none()
        );
        // Replay, and the other link, change nothing.
        for d in [&second, &first] {
            assert!(
                s.reset_password_by_link(d, "evil", None, None, NOW + 12)
                    .await
                    .unwrap()
                    .is_none()
            );
        }
        assert_eq!(
            s.user(&alice.id)
                .await
                .unwrap()
                .unwrap()
                .password_hash
                .as_deref(),
            Some("new-hash")
        );
        let events = events_of_kind(s, "password.reset").await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].subject.as_deref(), Some(alice.id.as_str()));
        assert!(
            s.outbox(10)
                .await
                .unwrap()
                .iter()
                .any(|m| m.kind == "notice" && m.body.as_deref() == Some("changed"))
        );
        // Expired: refused.
        let late = link(
            s,
            LinkPurpose::ResetPassword,
            &alice.id,
            "Alice@Example.org",
            NOW + 1800,
        )
        .await;
        assert!(
            s.reset_password_by_link(&late, "h", None, None, NOW + 1800)
                .await
                .unwrap()
                .is_none()
        );
        b.cleanup().await;
    }
}

#[tokio::test]
async fn concurrent_resets_by_one_link_have_one_winner() {
    for b in backends().await {
        let s = &b.store;
        let mut alice = user("alice");
        alice.email = Some("alice@example.org".into());
        alice.password_hash = Some("old".into());
        s.insert_user(&alice).await.unwrap();
        let d = link(
            s,
            LinkPurpose::VerifyEmail,
            &alice.id,
            "alice@example.org",
            NOW + 100,
        )
        .await;
        s.verify_email(&d, None, NOW).await.unwrap().unwrap();
        let d = link(
            s,
            LinkPurpose::ResetPassword,
            &alice.id,
            "alice@example.org",
            NOW + 1800,
        )
        .await;
        let mut tasks = Vec::new();
        for i in 0..6 {
            let (s, d) = (s.clone(), d.clone());
            tasks.push(tokio::spawn(async move {
                s.reset_password_by_link(&d, &format!("hash-{i}"), None, None, NOW + 1)
                    .await
                    .unwrap()
                    .is_some()
            }));
        }
        let mut winners = 0;
        for t in tasks {
            winners += usize::from(t.await.unwrap());
        }
        assert_eq!(winners, 1, "{}", b.name);
        b.cleanup().await;
    }
}

#[tokio::test]
async fn reset_requests_and_mail_are_claimed_by_one_worker_and_bodies_blanked() {
    for b in backends().await {
        let s = &b.store;
        let mut alice = user("alice");
        alice.email = Some("alice@example.org".into());
        s.insert_user(&alice).await.unwrap();

        s.queue_reset_request("alice@example.org", Some("192.0.2.1"), NOW)
            .await
            .unwrap();
        let claimed = s.claim_reset_requests(NOW, 10, 60).await.unwrap();
        assert_eq!(claimed.len(), 1, "{}", b.name);
        assert_eq!(claimed[0].ip.as_deref(), Some("192.0.2.1"));
        assert!(
            s.claim_reset_requests(NOW + 1, 10, 60)
                .await
                .unwrap()
                .is_empty()
        );
        // Its lease ran out (its node died): claimed again, finished once.
        let again = s.claim_reset_requests(NOW + 61, 10, 60).await.unwrap();
        assert_eq!(again.len(), 1);
        assert!(
            s.finish_reset_request(&again[0].id, &[], &[], NOW + 62)
                .await
                .unwrap()
        );
        assert!(
            !s.finish_reset_request(&claimed[0].id, &[], &[], NOW + 63)
                .await
                .unwrap()
        );

        let event =
            healthgate_store::Event::new(healthgate_core::event::EventKind::SecurityNoticeQueued);
        for body in ["one", "two"] {
            s.queue_mail(
                &mail(MailKind::Notice, &alice.id, "alice@example.org", body),
                &event,
                NOW,
            )
            .await
            .unwrap();
        }
        let due = s.claim_mail(NOW, 10, 60).await.unwrap();
        assert_eq!(due.len(), 2, "{}", b.name);
        assert!(s.claim_mail(NOW + 1, 10, 60).await.unwrap().is_empty());
        assert!(!format!("{:?}", due[0]).contains(&due[0].body));
        let (one, two) = if due[0].body == "one" {
            (&due[0], &due[1])
        } else {
            (&due[1], &due[0])
        };
        assert!(
            s.record_mail_attempt(
                one,
                MailOutcome::Failed {
                    error: "421 busy",
                    retry_at: Some(NOW + 15)
                },
                NOW + 1
            )
            .await
            .unwrap()
        );
        assert!(
            s.record_mail_attempt(
                two,
                MailOutcome::Failed {
                    error: "550 no such user",
                    retry_at: None
                },
                NOW + 1
            )
            .await
            .unwrap()
        );
        // Given up: not claimed again, its body gone.
        assert!(s.claim_mail(NOW + 14, 10, 60).await.unwrap().is_empty());
        let retried = s.claim_mail(NOW + 15, 10, 60).await.unwrap();
        assert_eq!(retried.len(), 1);
        assert_eq!((retried[0].body.as_str(), retried[0].attempts), ("one", 1));
        assert!(
            s.record_mail_attempt(&retried[0], MailOutcome::Sent, NOW + 16)
                .await
                .unwrap()
        );
        // Recorded once: a late second record changes nothing.
        assert!(
            !s.record_mail_attempt(&retried[0], MailOutcome::Sent, NOW + 17)
                .await
                .unwrap()
        );
        let outbox = s.outbox(10).await.unwrap();
        for m in &outbox {
            assert_eq!(m.body, None, "{}: {m:?}", b.name);
        }
        let sent = outbox.iter().find(|m| m.status == "sent").unwrap();
        assert_eq!((sent.attempts, sent.sent_at), (2, Some(NOW + 16)));
        let failed = outbox.iter().find(|m| m.status == "failed").unwrap();
        assert_eq!(failed.last_error.as_deref(), Some("550 no such user"));
        assert_eq!(events_of_kind(s, "email.delivered").await.len(), 1);
        let gave_up = events_of_kind(s, "email.delivery_failed").await;
        assert_eq!(gave_up.len(), 1);
        assert_eq!(gave_up[0].outcome, "failure");
        assert!(!gave_up[0].data.as_deref().unwrap().contains("two"));

        // Sent and given-up messages go after the retention period.
        let purged = s.purge_expired(NOW + 200, 100, 100, 10).await.unwrap();
        assert_eq!(purged.mail_outbox, 2, "{}", b.name);
        b.cleanup().await;
    }
}
