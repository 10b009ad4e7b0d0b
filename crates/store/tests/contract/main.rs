//! The store contract: every test runs against SQLite, and against PostgreSQL
//! too when `HEALTHGATE_TEST_POSTGRES_URL` is set (each test in a schema of
//! its own, dropped afterwards).

use healthgate_core::client::{Client, ClientKind};
use healthgate_core::error::ErrorCode;
use healthgate_core::grant::NewTokens;
use healthgate_core::redirect::RedirectUri;
use healthgate_core::scope::ScopeSet;
use healthgate_core::secret::{SecretKind, mint, new_id};
use healthgate_core::token::{AuthorizationCode, RefreshRotation};
use healthgate_core::user::{User, UserType};
use healthgate_store::{Actor, PoolConfig, Session, Store, StoreError, ThrottleKind, Unlocked};

mod engine;
mod recovery;

use engine::{CodeRedemption, GrantError, Grants, Refresh};

const NOW: i64 = 1_800_000_000;

/// A store on a fresh database, and what it takes to clean it up.
struct Backend {
    name: &'static str,
    store: Store,
    _dir: Option<tempfile::TempDir>,
    pg_schema: Option<(String, String)>,
}

impl Backend {
    async fn cleanup(self) {
        self.store.close().await;
        if let Some((url, schema)) = self.pg_schema {
            let admin = Store::connect(&url, PoolConfig::default())
                .await
                .expect("connect for cleanup");
            admin
                .execute_admin(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                .await
                .expect("drop schema");
            admin.close().await;
        }
    }
}

/// Every backend this run can reach.
async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/contract.db", dir.path().display());
    let store = Store::connect(&url, PoolConfig::default())
        .await
        .expect("sqlite");
    store.migrate().await.expect("migrate sqlite");
    let mut out = vec![Backend {
        name: "sqlite",
        store,
        _dir: Some(dir),
        pg_schema: None,
    }];
    match std::env::var("HEALTHGATE_TEST_POSTGRES_URL") {
        Ok(base) if !base.is_empty() => {
            let schema = new_id("t").to_lowercase().replace('-', "_");
            let admin = Store::connect(&base, PoolConfig::default())
                .await
                .expect("postgres");
            admin
                .execute_admin(&format!("CREATE SCHEMA \"{schema}\""))
                .await
                .expect("create schema");
            admin.close().await;
            let sep = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
            let store = Store::connect(&url, PoolConfig::default())
                .await
                .expect("postgres schema");
            store.migrate().await.expect("migrate postgres");
            out.push(Backend {
                name: "postgres",
                store,
                _dir: None,
                pg_schema: Some((base, schema)),
            });
        }
        _ => {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| eprintln!("HEALTHGATE_TEST_POSTGRES_URL is not set: store contract tests run on SQLite only"));
        }
    }
    out
}

fn client(id: &str) -> Client {
    Client {
        photo_url: Some("https://partner.example/p.png".into()),
        redirect_uris: vec![
            RedirectUri::parse("https://partner.example/cb").unwrap(),
            RedirectUri::parse("https://partner.example/cb2").unwrap(),
        ],
        allowed_scopes: ScopeSet::parse("profile_read profile_write").unwrap(),
        user_types: vec![UserType::Member, UserType::Expert],
        secret_digest: Some(mint(SecretKind::ClientSecret).digest),
        ..Client::new(id, "Partner", ClientKind::Confidential, NOW)
    }
}

fn user(username: &str) -> User {
    User {
        id: new_id("usr"),
        username: username.to_owned(),
        name: None,
        email: None,
        user_type: UserType::Member,
        password_hash: None,
        created_at: NOW,
        locked_at: None,
        provisioned_by: None,
        operator: false,
        password_reset_at: None,
        email_verified_at: None,
        fhir_user: None,
    }
}

fn tokens(with_refresh: bool) -> NewTokens {
    NewTokens {
        access: mint(SecretKind::AccessToken),
        access_expires_at: NOW + 7200,
        refresh: with_refresh.then(|| mint(SecretKind::RefreshToken)),
        refresh_expires_at: None,
        dpop_jkt: None,
    }
}

/// A client, a user and a fresh code for them; returns (client id, user, code digest).
async fn setup_code(store: &Store) -> (String, User, String) {
    let c = client(&new_id("app"));
    store.insert_client(&c).await.unwrap();
    let u = user(&new_id("name"));
    store.insert_user(&u).await.unwrap();
    let code = mint(SecretKind::AuthorizationCode);
    store
        .insert_authorization_code(
            &code.digest,
            &AuthorizationCode {
                family_id: new_id("fam"),
                client_id: c.id.clone(),
                user_id: u.id.clone(),
                redirect_uri: "https://partner.example/cb".into(),
                redirect_uri_provided: true,
                scope: ScopeSet::parse("profile_read").unwrap(),
                code_challenge: None,
                created_at: NOW,
                expires_at: NOW + 600,
                grant: Default::default(),
                nonce: None,
                auth_time: None,
                amr: Default::default(),
                dpop_jkt: None,
            },
        )
        .await
        .unwrap();
    (c.id, u, code.digest)
}

fn redemption<'a>(client_id: &'a str, digest: &'a str) -> CodeRedemption<'a> {
    CodeRedemption {
        code_digest: digest,
        client_id,
        redirect_uri: Some("https://partner.example/cb"),
        code_verifier: None,
        ip: None,
        now: NOW + 1,
    }
}

fn invalid_grant(r: Result<healthgate_core::grant::Issued, GrantError>) -> bool {
    matches!(r, Err(GrantError::OAuth(e)) if e.code == ErrorCode::InvalidGrant)
}

/// A rotation with a grace keeps the replaced digest beside the new one,
/// with its expiry, in the rotation's transaction with its event; a
/// rotation without one, a second rotation and a suspension end it.
#[tokio::test]
async fn a_rotated_secret_is_kept_with_its_expiry_until_ended() {
    for b in backends().await {
        let s = &b.store;
        let mut c = client("app-grace");
        c.secret_digest = Some("digest1".into());
        s.insert_client(&c).await.unwrap();
        let previous = |c: Client| c.previous_secret.map(|p| (p.digest, p.expires_at));
        assert!(
            s.set_client_secret(
                "app-grace",
                "digest2",
                Some(NOW + 100),
                Actor::system(),
                NOW
            )
            .await
            .unwrap()
        );
        let got = s.client("app-grace").await.unwrap().unwrap();
        assert_eq!(got.secret_digest.as_deref(), Some("digest2"), "{}", b.name);
        assert_eq!(
            previous(got),
            Some(("digest1".into(), NOW + 100)),
            "{}",
            b.name
        );
        let events = events_of_kind(s, "client.secret_rotated").await;
        assert_eq!(
            data_of(&events[0]),
            serde_json::json!({"previous_secret_expires_at": NOW + 100})
        );
        // The partner's bearer lookup finds the client by either digest.
        for digest in ["digest1", "digest2"] {
            let found = s.client_by_secret_digest(digest).await.unwrap();
            assert_eq!(
                found.map(|c| c.id).as_deref(),
                Some("app-grace"),
                "{}",
                b.name
            );
        }
        // A second rotation replaces the one in grace with the one it replaces.
        s.set_client_secret(
            "app-grace",
            "digest3",
            Some(NOW + 200),
            Actor::system(),
            NOW + 10,
        )
        .await
        .unwrap();
        let got = s.client("app-grace").await.unwrap().unwrap();
        assert_eq!(
            previous(got),
            Some(("digest2".into(), NOW + 200)),
            "{}",
            b.name
        );
        assert!(
            s.client_by_secret_digest("digest1")
                .await
                .unwrap()
                .is_none()
        );
        // At once (or a grace already over): no previous secret.
        for until in [None, Some(NOW + 20)] {
            s.set_client_secret("app-grace", "digest4", until, Actor::system(), NOW + 20)
                .await
                .unwrap();
            let got = s.client("app-grace").await.unwrap().unwrap();
            assert_eq!(previous(got), None, "{}", b.name);
        }
        // A suspension ends a secret in its grace.
        s.set_client_secret(
            "app-grace",
            "digest5",
            Some(NOW + 500),
            Actor::system(),
            NOW + 30,
        )
        .await
        .unwrap();
        s.suspend_client("app-grace", Some("test"), Actor::system(), NOW + 40)
            .await
            .unwrap();
        let got = s.client("app-grace").await.unwrap().unwrap();
        assert_eq!(previous(got), None, "{}", b.name);
        assert!(
            s.client_by_secret_digest("digest4")
                .await
                .unwrap()
                .is_none()
        );
        b.cleanup().await;
    }
}

#[tokio::test]
async fn clients_round_trip() {
    for b in backends().await {
        let c = Client {
            smart_launcher: true,
            launch_url: Some("https://partner.example/launch".into()),
            ..client("app-roundtrip")
        };
        b.store.insert_client(&c).await.unwrap();
        assert_eq!(
            b.store.client("app-roundtrip").await.unwrap().as_ref(),
            Some(&c),
            "{}",
            b.name
        );
        assert!(
            matches!(
                b.store.insert_client(&c).await,
                Err(StoreError::Conflict(_))
            ),
            "{}",
            b.name
        );
        assert_eq!(b.store.clients().await.unwrap().len(), 1);
        assert!(
            b.store
                .set_client_secret("app-roundtrip", "digest2", None, Actor::system(), NOW + 5)
                .await
                .unwrap()
        );
        assert_eq!(
            b.store
                .client("app-roundtrip")
                .await
                .unwrap()
                .unwrap()
                .secret_digest
                .as_deref(),
            Some("digest2")
        );
        assert!(
            b.store
                .delete_client("app-roundtrip", Actor::system(), NOW)
                .await
                .unwrap()
        );
        assert!(b.store.client("app-roundtrip").await.unwrap().is_none());
        assert!(
            !b.store
                .delete_client("app-roundtrip", Actor::system(), NOW)
                .await
                .unwrap()
        );
        b.cleanup().await;
    }
}

#[tokio::test]
async fn a_backup_holds_what_was_committed_and_never_replaces_a_file() {
    for b in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("copy.db");
        let backed_up = b.store.backup_sqlite(&to).await;
        if b.name == "postgres" {
            let Err(StoreError::BackupRefused(why)) = backed_up else {
                panic!("postgres: {backed_up:?}");
            };
            assert!(why.contains("pg_dump"), "{why}");
            assert!(!to.exists());
            b.cleanup().await;
            continue;
        }
        // Written after the first copy, so only the second holds it.
        let bytes = backed_up.unwrap();
        assert_eq!(bytes, std::fs::metadata(&to).unwrap().len());
        b.store.insert_client(&client("app-later")).await.unwrap();
        let refused = b.store.backup_sqlite(&to).await;
        assert!(
            matches!(&refused, Err(StoreError::BackupRefused(why)) if why.contains("exists")),
            "{refused:?}"
        );
        assert_eq!(
            std::fs::metadata(&to).unwrap().len(),
            bytes,
            "left as it was"
        );
        let second = dir.path().join("second.db");
        b.store.backup_sqlite(&second).await.unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".partial")), "{names:?}");

        for (path, holds_later) in [(&to, false), (&second, true)] {
            let copy = Store::connect(
                &format!("sqlite://{}", path.display()),
                PoolConfig::default(),
            )
            .await
            .unwrap();
            copy.migrate().await.unwrap();
            assert_eq!(
                copy.client("app-later").await.unwrap().is_some(),
                holds_later,
                "{}",
                path.display()
            );
            copy.close().await;
        }
        b.cleanup().await;
    }
}

#[tokio::test]
async fn usernames_are_unique() {
    for b in backends().await {
        let alice = user("alice");
        b.store.insert_user(&alice).await.unwrap();
        assert!(
            matches!(
                b.store.insert_user(&user("alice")).await,
                Err(StoreError::Conflict(_))
            ),
            "{}",
            b.name
        );
        assert_eq!(
            b.store.user_by_username("alice").await.unwrap().unwrap().id,
            alice.id
        );
        assert_eq!(
            b.store.user(&alice.id).await.unwrap().unwrap().username,
            "alice"
        );
        b.cleanup().await;
    }
}

#[tokio::test]
async fn a_code_is_redeemed_once_and_replay_revokes_the_family() {
    for b in backends().await {
        let (client_id, _, digest) = setup_code(&b.store).await;
        let first = tokens(true);
        let issued = b
            .store
            .redeem_authorization_code(redemption(&client_id, &digest), &first)
            .await
            .unwrap();
        let access = b
            .store
            .access_token(&first.access.digest)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(access.family_id, issued.family_id);
        assert!(access.revoked_at.is_none(), "{}", b.name);

        assert!(
            invalid_grant(
                b.store
                    .redeem_authorization_code(redemption(&client_id, &digest), &tokens(true))
                    .await
            ),
            "{}",
            b.name
        );
        let access = b
            .store
            .access_token(&first.access.digest)
            .await
            .unwrap()
            .unwrap();
        assert!(
            access.revoked_at.is_some(),
            "{}: replay must revoke the family",
            b.name
        );
        b.cleanup().await;
    }
}

#[tokio::test]
async fn a_failed_binding_leaves_the_code_unused() {
    for b in backends().await {
        let (client_id, _, digest) = setup_code(&b.store).await;
        let mut wrong = redemption(&client_id, &digest);
        wrong.redirect_uri = Some("https://partner.example/cb2");
        assert!(invalid_grant(
            b.store
                .redeem_authorization_code(wrong, &tokens(true))
                .await
        ));
        assert!(
            b.store
                .redeem_authorization_code(redemption(&client_id, &digest), &tokens(true))
                .await
                .is_ok(),
            "{}",
            b.name
        );
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redemptions_have_one_winner() {
    for b in backends().await {
        let (client_id, _, digest) = setup_code(&b.store).await;
        let mut handles = Vec::new();
        for _ in 0..20 {
            let store = b.store.clone();
            let (client_id, digest) = (client_id.clone(), digest.clone());
            handles.push(tokio::spawn(async move {
                store
                    .redeem_authorization_code(redemption(&client_id, &digest), &tokens(true))
                    .await
            }));
        }
        let mut wins = 0;
        for h in handles {
            match h.await.unwrap() {
                Ok(_) => wins += 1,
                Err(GrantError::OAuth(e)) => assert_eq!(e.code, ErrorCode::InvalidGrant),
                Err(GrantError::Store(e)) => panic!("{}: storage error {e}", b.name),
            }
        }
        assert_eq!(wins, 1, "{}", b.name);
        b.cleanup().await;
    }
}

async fn issued_refresh(store: &Store) -> (String, NewTokens) {
    let (client_id, _, digest) = setup_code(store).await;
    let t = tokens(true);
    store
        .redeem_authorization_code(redemption(&client_id, &digest), &t)
        .await
        .unwrap();
    (client_id, t)
}

fn refresh_of<'a>(client_id: &'a str, t: &'a NewTokens, rotation: RefreshRotation) -> Refresh<'a> {
    Refresh {
        refresh_digest: &t.refresh.as_ref().unwrap().digest,
        client_id,
        scope: None,
        redirect_uri: None,
        rotation,
        ip: None,
        now: NOW + 10,
    }
}

#[tokio::test]
async fn immediate_rotation_and_reuse_detection() {
    for b in backends().await {
        let (client_id, t0) = issued_refresh(&b.store).await;
        let t1 = tokens(true);
        b.store
            .refresh(refresh_of(&client_id, &t0, RefreshRotation::Immediate), &t1)
            .await
            .unwrap();
        let old_access = b
            .store
            .access_token(&t0.access.digest)
            .await
            .unwrap()
            .unwrap();
        assert!(
            old_access.revoked_at.is_some(),
            "{}: the old access token dies with the rotation",
            b.name
        );
        assert!(invalid_grant(
            b.store
                .refresh(
                    refresh_of(&client_id, &t0, RefreshRotation::Immediate),
                    &tokens(true)
                )
                .await
        ));
        let new_access = b
            .store
            .access_token(&t1.access.digest)
            .await
            .unwrap()
            .unwrap();
        assert!(
            new_access.revoked_at.is_some(),
            "{}: reuse revokes the family",
            b.name
        );
        b.cleanup().await;
    }
}

/// Grant writes that arrive together share a commit, yet each stands or
/// fails alone: one that cannot be written (its access token's digest is
/// taken) fails, and every other one is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_committed_together_fail_alone() {
    for b in backends().await {
        let c = client(&new_id("app"));
        b.store.insert_client(&c).await.unwrap();
        let scope = ScopeSet::parse("profile_read").unwrap();
        let taken = tokens(false);
        b.store
            .issue_client_token(&c.id, &scope, &taken, NOW)
            .await
            .unwrap();
        let mut handles = Vec::new();
        for i in 0..40 {
            let (store, id, scope) = (b.store.clone(), c.id.clone(), scope.clone());
            let mut t = tokens(false);
            if i == 20 {
                t.access.digest = taken.access.digest.clone();
            }
            handles.push(tokio::spawn(async move {
                let issued = store.issue_client_token(&id, &scope, &t, NOW).await;
                (issued.is_ok(), t)
            }));
        }
        let mut committed = 0;
        for h in handles {
            let (ok, t) = h.await.unwrap();
            if t.access.digest == taken.access.digest {
                assert!(!ok, "{}: a duplicate digest cannot be written", b.name);
                continue;
            }
            assert!(ok, "{}", b.name);
            let a = b.store.access_token(&t.access.digest).await.unwrap();
            assert!(a.is_some(), "{}: answered, so committed", b.name);
            committed += 1;
        }
        assert_eq!(committed, 39, "{}", b.name);
        b.cleanup().await;
    }
}

/// Every change to a client's record gives it a new version stamp, whatever
/// statement made it: an update, a suspension, a deletion and a new record
/// under the same id.
#[tokio::test]
async fn a_client_record_changes_version_with_every_change() {
    for b in backends().await {
        let mut c = client(&new_id("app"));
        b.store.insert_client(&c).await.unwrap();
        let (_, first) = b.store.client_with_version(&c.id).await.unwrap().unwrap();
        assert!(b.store.client_is(&c.id, first).await.unwrap(), "{}", b.name);
        let (_, again) = b.store.client_with_version(&c.id).await.unwrap().unwrap();
        assert_eq!(first, again, "{}: reading changes nothing", b.name);

        c.name = "Partner, renamed".into();
        b.store
            .update_client(&c, None, Actor::system())
            .await
            .unwrap();
        let (_, renamed) = b.store.client_with_version(&c.id).await.unwrap().unwrap();
        assert_ne!(renamed, first, "{}: an update", b.name);
        assert!(
            !b.store.client_is(&c.id, first).await.unwrap(),
            "{}",
            b.name
        );

        b.store
            .suspend_client(&c.id, None, Actor::system(), NOW)
            .await
            .unwrap();
        let (_, suspended) = b.store.client_with_version(&c.id).await.unwrap().unwrap();
        assert_ne!(suspended, renamed, "{}: a suspension", b.name);

        assert!(
            b.store
                .delete_client(&c.id, Actor::system(), NOW)
                .await
                .unwrap()
        );
        assert!(
            !b.store.client_is(&c.id, suspended).await.unwrap(),
            "{}: deleted",
            b.name
        );
        b.store.insert_client(&c).await.unwrap();
        let (_, anew) = b.store.client_with_version(&c.id).await.unwrap().unwrap();
        assert_ne!(anew, suspended, "{}: registered again", b.name);
        b.cleanup().await;
    }
}

/// A grant's write claims the client's stamp it was decided with: in a
/// group commit, the writes that claim a stamp the record no longer has are
/// refused whole (nothing written) and every other one is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_for_a_changed_client_writes_nothing() {
    use healthgate_core::grant::{self, Claim};
    use healthgate_store::Applied;
    for b in backends().await {
        let c = client(&new_id("app"));
        b.store.insert_client(&c).await.unwrap();
        let (_, version) = b.store.client_with_version(&c.id).await.unwrap().unwrap();
        let scope = ScopeSet::parse("profile_read").unwrap();
        let mut handles = Vec::new();
        for i in 0..30 {
            let (store, id, scope) = (b.store.clone(), c.id.clone(), scope.clone());
            let claimed = if i % 3 == 0 {
                version.wrapping_add(1)
            } else {
                version
            };
            handles.push(tokio::spawn(async move {
                let t = tokens(false);
                let mut d = grant::direct(&id, None, &scope, &t, "client_credentials", NOW);
                d.write.claims.push(Claim::Client {
                    id: id.clone(),
                    version: claimed,
                });
                let applied = store.apply_grant(d.write).await.unwrap();
                (claimed == version, applied, t)
            }));
        }
        for h in handles {
            let (current, applied, t) = h.await.unwrap();
            let written = b.store.access_token(&t.access.digest).await.unwrap();
            if current {
                assert_eq!(applied, Applied::Done, "{}", b.name);
                assert!(written.is_some(), "{}", b.name);
            } else {
                assert_eq!(applied, Applied::ClientChanged, "{}", b.name);
                assert!(written.is_none(), "{}: nothing written", b.name);
            }
        }
        // Alone (outside a group) the claim is checked the same way.
        let t = tokens(false);
        let mut d = grant::direct(&c.id, None, &scope, &t, "client_credentials", NOW);
        d.write.claims.push(Claim::Client {
            id: c.id.clone(),
            version,
        });
        b.store
            .suspend_client(&c.id, None, Actor::system(), NOW)
            .await
            .unwrap();
        assert_eq!(
            b.store.apply_grant(d.write).await.unwrap(),
            Applied::ClientChanged,
            "{}: suspended since",
            b.name
        );
        b.cleanup().await;
    }
}

/// Decisions made on the same read of one code, committed together: one
/// consumes it and is written, every other is stale and writes nothing; and
/// a write for an account locked since it was read is stale in the same
/// group without holding back the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_in_one_group_that_claim_one_code_have_one_winner() {
    use healthgate_core::grant::{self, CodeRequest, Presenter};
    use healthgate_store::Applied;
    for b in backends().await {
        let (client_id, _, digest) = setup_code(&b.store).await;
        let read = b.store.code_for_redemption(&digest).await.unwrap();
        let request = CodeRequest {
            code_digest: &digest,
            redirect_uri: Some("https://partner.example/cb"),
            code_verifier: None,
            public: false,
        };
        let by = Presenter {
            client_id: &client_id,
            ip: None,
            now: NOW + 1,
        };
        // Another account's code, whose account is locked before its write.
        let (other_client, other_user, other_digest) = setup_code(&b.store).await;
        let other_read = b.store.code_for_redemption(&other_digest).await.unwrap();
        let locked = grant::redeem_code(
            other_read.as_ref(),
            CodeRequest {
                code_digest: &other_digest,
                ..request
            },
            Presenter {
                client_id: &other_client,
                ..by
            },
            &tokens(true),
        );
        b.store.lock_user(&other_user.id, NOW).await.unwrap();
        let mut handles = Vec::new();
        for _ in 0..20 {
            let t = tokens(true);
            let d = grant::redeem_code(read.as_ref(), request, by, &t);
            let store = b.store.clone();
            handles.push(tokio::spawn(async move {
                (store.apply_grant(d.write).await.unwrap(), t)
            }));
        }
        let store = b.store.clone();
        let locked = tokio::spawn(async move { store.apply_grant(locked.write).await.unwrap() });
        let mut winners = 0;
        for h in handles {
            let (applied, t) = h.await.unwrap();
            let written = b.store.access_token(&t.access.digest).await.unwrap();
            match applied {
                Applied::Done => {
                    winners += 1;
                    assert!(written.is_some(), "{}", b.name);
                }
                Applied::Stale => assert!(written.is_none(), "{}: nothing written", b.name),
                Applied::ClientChanged => panic!("{}: the client did not change", b.name),
            }
        }
        assert_eq!(winners, 1, "{}: one consumes the code", b.name);
        assert_eq!(locked.await.unwrap(), Applied::Stale, "{}", b.name);
        let still = b
            .store
            .code_for_redemption(&other_digest)
            .await
            .unwrap()
            .unwrap();
        assert!(
            !still.consumed,
            "{}: the locked account's code is left unused",
            b.name
        );
        b.cleanup().await;
    }
}

/// Introspection reads the token, its account's username and the calling
/// client's stamp in one query.
#[tokio::test]
async fn an_access_token_is_read_with_the_callers_version() {
    for b in backends().await {
        let (client_id, t) = issued_refresh(&b.store).await;
        let (_, version) = b
            .store
            .client_with_version(&client_id)
            .await
            .unwrap()
            .unwrap();
        let read = b
            .store
            .access_token_for_caller(&t.access.digest, &client_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read.caller_version, Some(version), "{}", b.name);
        assert_eq!(read.token.client_id, client_id, "{}", b.name);
        assert!(read.active_username.is_some(), "{}", b.name);
        let other = b
            .store
            .access_token_for_caller(&t.access.digest, "no-such-client")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(other.caller_version, None, "{}", b.name);
        assert!(
            b.store
                .access_token_for_caller("no-such-digest", &client_id)
                .await
                .unwrap()
                .is_none(),
            "{}",
            b.name
        );
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_leave_at_most_one_live_chain() {
    for b in backends().await {
        let (client_id, t0) = issued_refresh(&b.store).await;
        let mut handles = Vec::new();
        for _ in 0..20 {
            let store = b.store.clone();
            let client_id = client_id.clone();
            let digest = t0.refresh.as_ref().unwrap().digest.clone();
            handles.push(tokio::spawn(async move {
                let t = tokens(true);
                let r = Refresh {
                    refresh_digest: &digest,
                    client_id: &client_id,
                    scope: None,
                    redirect_uri: None,
                    rotation: RefreshRotation::Immediate,
                    ip: None,
                    now: NOW + 10,
                };
                store.refresh(r, &t).await.map(|_| t)
            }));
        }
        let mut live = 0;
        for h in handles {
            if let Ok(t) = h.await.unwrap() {
                let a = b
                    .store
                    .access_token(&t.access.digest)
                    .await
                    .unwrap()
                    .unwrap();
                if a.revoked_at.is_none() {
                    live += 1;
                }
            }
        }
        assert!(live <= 1, "{}: {live} live chains", b.name);
        b.cleanup().await;
    }
}

#[tokio::test]
async fn on_first_use_rotation_retires_the_parent_when_a_child_is_used() {
    for b in backends().await {
        let (client_id, t0) = issued_refresh(&b.store).await;
        let (t1, t2) = (tokens(true), tokens(true));
        b.store
            .refresh(
                refresh_of(&client_id, &t0, RefreshRotation::OnFirstUse),
                &t1,
            )
            .await
            .unwrap();
        b.store
            .refresh(
                refresh_of(&client_id, &t0, RefreshRotation::OnFirstUse),
                &t2,
            )
            .await
            .unwrap();
        let a2 = b
            .store
            .access_token(&t2.access.digest)
            .await
            .unwrap()
            .unwrap();
        assert!(
            b.store
                .first_use_of_access_token(&a2, NOW + 20)
                .await
                .unwrap(),
            "{}",
            b.name
        );
        for (what, digest) in [("old", &t0.access.digest), ("sibling", &t1.access.digest)] {
            let a = b.store.access_token(digest).await.unwrap().unwrap();
            assert!(
                a.revoked_at.is_some(),
                "{}: {what} access token must be retired",
                b.name
            );
        }
        let a2 = b
            .store
            .access_token(&t2.access.digest)
            .await
            .unwrap()
            .unwrap();
        assert!(a2.revoked_at.is_none(), "{}", b.name);
        assert!(invalid_grant(
            b.store
                .refresh(
                    refresh_of(&client_id, &t0, RefreshRotation::OnFirstUse),
                    &tokens(true)
                )
                .await
        ));
        b.cleanup().await;
    }
}

#[tokio::test]
async fn sessions_expire_and_rotate() {
    for b in backends().await {
        let u = user("alice");
        b.store.insert_user(&u).await.unwrap();
        let s = |digest: &str, user_id: Option<String>| Session {
            id_digest: digest.into(),
            user_id,
            csrf_token: "csrf".into(),
            auth_time: None,
            created_at: NOW,
            expires_at: NOW + 60,
            user_agent: Some("Mozilla/5.0".into()),
            ip: Some("192.0.2.7".into()),
            ..Default::default()
        };
        b.store.replace_session(None, &s("d1", None)).await.unwrap();
        assert!(b.store.session("d1", NOW).await.unwrap().is_some());
        assert!(
            b.store.session("d1", NOW + 60).await.unwrap().is_none(),
            "{}: expired",
            b.name
        );
        b.store
            .replace_session(Some("d1"), &s("d2", Some(u.id.clone())))
            .await
            .unwrap();
        assert!(b.store.session("d1", NOW).await.unwrap().is_none());
        assert_eq!(
            b.store.session("d2", NOW).await.unwrap(),
            Some(s("d2", Some(u.id.clone()))),
            "{}: every field, the browser's too, round-trips",
            b.name
        );
        // Locking the account ends its sessions.
        assert!(b.store.lock_user(&u.id, NOW).await.unwrap());
        assert!(
            b.store.session("d2", NOW).await.unwrap().is_none(),
            "{}",
            b.name
        );
        b.cleanup().await;
    }
}

#[tokio::test]
async fn consent_accumulates() {
    for b in backends().await {
        let c = client("app-consent");
        b.store.insert_client(&c).await.unwrap();
        let u = user("alice");
        b.store.insert_user(&u).await.unwrap();
        assert!(b.store.consent(&u.id, &c.id).await.unwrap().is_none());
        b.store
            .remember_consent(
                &u.id,
                &c.id,
                &ScopeSet::parse("profile_read").unwrap(),
                None,
                NOW,
            )
            .await
            .unwrap();
        b.store
            .remember_consent(
                &u.id,
                &c.id,
                &ScopeSet::parse("profile_write").unwrap(),
                None,
                NOW,
            )
            .await
            .unwrap();
        let (granted, _) = b.store.consent(&u.id, &c.id).await.unwrap().unwrap();
        assert_eq!(
            granted.to_string(),
            "profile_read profile_write",
            "{}",
            b.name
        );
        b.cleanup().await;
    }
}

#[tokio::test]
async fn migrations_are_idempotent() {
    for b in backends().await {
        b.store.migrate().await.unwrap();
        b.store.migrate().await.unwrap();
        b.store.ping().await.unwrap();
        b.cleanup().await;
    }
}

fn session(digest: &str, expires_at: i64) -> Session {
    Session {
        id_digest: digest.into(),
        user_id: None,
        csrf_token: "csrf".into(),
        auth_time: None,
        created_at: NOW,
        expires_at,
        user_agent: None,
        ip: None,
        ..Default::default()
    }
}

#[tokio::test]
async fn purge_removes_what_can_no_longer_matter_and_keeps_the_rest() {
    for b in backends().await {
        let s = &b.store;
        s.replace_session(None, &session("old", NOW + 60))
            .await
            .unwrap();
        s.replace_session(None, &session("live", NOW + 10_000_000))
            .await
            .unwrap();
        let (client_id, t0) = issued_refresh(s).await;
        let t1 = tokens(true);
        s.refresh(refresh_of(&client_id, &t0, RefreshRotation::Immediate), &t1)
            .await
            .unwrap();

        // Nothing is due yet.
        assert_eq!(
            s.purge_expired(NOW + 30, 1000, 100, 10)
                .await
                .unwrap()
                .total(),
            0,
            "{}",
            b.name
        );

        let later = NOW + 7200 + 86_401;
        let purged = s.purge_expired(later, 1000, 100, 10).await.unwrap();
        assert_eq!(purged.sessions, 1, "{}", b.name);
        assert_eq!(purged.authorization_codes, 1, "{}", b.name);
        assert_eq!(
            purged.access_tokens, 2,
            "{}: both expired access tokens",
            b.name
        );
        assert_eq!(
            purged.refresh_tokens, 1,
            "{}: the rotated refresh token",
            b.name
        );
        assert_eq!(
            purged.token_families, 0,
            "{}: the family still has a live refresh token",
            b.name
        );
        assert!(s.session("live", NOW).await.unwrap().is_some());
        // The live refresh token still works after the purge.
        let mut r = refresh_of(&client_id, &t1, RefreshRotation::Immediate);
        r.now = later;
        s.refresh(r, &tokens(true))
            .await
            .expect("live chain survives the purge");
        b.cleanup().await;
    }
}

#[tokio::test]
async fn purge_works_in_bounded_batches() {
    for b in backends().await {
        for i in 0..25 {
            b.store
                .replace_session(None, &session(&format!("s{i}"), NOW))
                .await
                .unwrap();
        }
        assert_eq!(
            b.store
                .purge_expired(NOW + 1, 0, 10, 1)
                .await
                .unwrap()
                .sessions,
            10,
            "{}",
            b.name
        );
        assert_eq!(
            b.store
                .purge_expired(NOW + 1, 0, 10, 5)
                .await
                .unwrap()
                .sessions,
            15,
            "{}",
            b.name
        );
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_purges_do_not_conflict() {
    for b in backends().await {
        for i in 0..200 {
            b.store
                .replace_session(None, &session(&format!("c{i}"), NOW))
                .await
                .unwrap();
        }
        let (x, y) = (b.store.clone(), b.store.clone());
        let (px, py) = tokio::join!(
            tokio::spawn(async move { x.purge_expired(NOW + 1, 0, 20, 100).await }),
            tokio::spawn(async move { y.purge_expired(NOW + 1, 0, 20, 100).await }),
        );
        let total = px.unwrap().unwrap().sessions + py.unwrap().unwrap().sessions;
        assert_eq!(total, 200, "{}: every row deleted exactly once", b.name);
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_do_not_race() {
    let Ok(base) = std::env::var("HEALTHGATE_TEST_POSTGRES_URL") else {
        eprintln!(
            "HEALTHGATE_TEST_POSTGRES_URL is not set: skipping the concurrent-migration test"
        );
        return;
    };
    let schema = new_id("m").to_lowercase().replace('-', "_");
    let admin = Store::connect(&base, PoolConfig::default()).await.unwrap();
    admin
        .execute_admin(&format!("CREATE SCHEMA \"{schema}\""))
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
    let mut handles = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        handles.push(tokio::spawn(async move {
            let store = Store::connect(&url, PoolConfig::default()).await?;
            let r = store.migrate().await;
            store.close().await;
            r
        }));
    }
    for h in handles {
        h.await.unwrap().expect("every node's migration succeeds");
    }
    admin
        .execute_admin(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();
    admin.close().await;
}

async fn some_events(store: &Store, n: i64) {
    use healthgate_core::event::EventKind;
    for i in 0..n {
        let e = healthgate_store::Event::new(EventKind::LoginSucceeded)
            .actor(Some("usr-1"))
            .ip(Some("127.0.0.1"))
            .data(serde_json::json!({ "n": i }));
        store.record_event(NOW + i, &e).await.unwrap();
    }
}

#[tokio::test]
async fn events_are_listed_newest_first() {
    for b in backends().await {
        some_events(&b.store, 3).await;
        let events = b.store.events(None, 10).await.unwrap();
        let ns: Vec<i64> = events.iter().map(|e| e.at - NOW).collect();
        assert_eq!(ns, [2, 1, 0], "{}", b.name);
        assert_eq!(events[0].kind, "login.succeeded");
        assert_eq!(events[0].ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(b.store.events(Some(NOW + 1), 10).await.unwrap().len(), 2);
        b.cleanup().await;
    }
}

#[tokio::test]
async fn the_audit_chain_links_every_event_and_catches_tampering() {
    for b in backends().await {
        some_events(&b.store, 5).await;
        assert_eq!(b.store.seal_events(3).await.unwrap(), 3, "{}", b.name);
        let report = b.store.verify_chain().await.unwrap();
        assert_eq!(
            (report.sealed, report.unsealed, report.broken.clone()),
            (3, 2, None),
            "{}",
            b.name
        );
        assert_eq!(b.store.seal_events(100).await.unwrap(), 2);
        some_events(&b.store, 1).await;
        b.store.seal_events(100).await.unwrap();
        assert_eq!(
            b.store.verify_chain().await.unwrap().broken,
            None,
            "{}",
            b.name
        );

        // An edited row.
        b.store
            .execute_admin("UPDATE events SET actor_user_id = 'usr-2' WHERE chain_pos = 2")
            .await
            .unwrap();
        let report = b.store.verify_chain().await.unwrap();
        assert_eq!(
            report.broken.as_ref().map(|(pos, _)| *pos),
            Some(2),
            "{}: {report:?}",
            b.name
        );
        b.store
            .execute_admin("UPDATE events SET actor_user_id = 'usr-1' WHERE chain_pos = 2")
            .await
            .unwrap();
        assert_eq!(b.store.verify_chain().await.unwrap().broken, None);

        // A deleted row in the middle, then at the end.
        b.store
            .execute_admin("DELETE FROM events WHERE chain_pos = 4")
            .await
            .unwrap();
        assert_eq!(
            b.store.verify_chain().await.unwrap().broken.map(|(p, _)| p),
            Some(4),
            "{}",
            b.name
        );
        b.cleanup().await;
    }
}

/// A segment's lines, decompressed.
fn segment_lines(path: &std::path::Path) -> Vec<String> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).unwrap();
    std::io::BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .map(Result::unwrap)
        .collect()
}

fn write_segment(path: &std::path::Path, lines: &[String]) {
    use std::io::Write;
    let mut out = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::default(),
    );
    for line in lines {
        writeln!(out, "{line}").unwrap();
    }
    out.finish().unwrap();
}

#[tokio::test]
async fn an_archive_waits_while_another_holds_its_folder() {
    for b in backends().await {
        let folder = tempfile::tempdir().unwrap();
        let dir = folder.path().join("archive");
        some_events(&b.store, 4).await;
        b.store.seal_events(100).await.unwrap();
        // Another run (here: the test) holds the folder.
        std::fs::create_dir_all(&dir).unwrap();
        let other = std::fs::File::create(dir.join(".lock")).unwrap();
        other.lock().unwrap();
        let busy = b.store.archive_events(NOW + 10, &dir, NOW + 10).await;
        assert!(
            matches!(busy, Err(StoreError::ArchiveBusy(_))),
            "{}: {busy:?}",
            b.name
        );
        assert!(
            b.store.checkpoints().await.unwrap().is_empty(),
            "{}",
            b.name
        );
        let written: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != ".lock")
            .collect();
        assert!(written.is_empty(), "{}: {written:?}", b.name);
        // Once it is done, the next run goes ahead.
        drop(other);
        let archived = b
            .store
            .archive_events(NOW + 10, &dir, NOW + 10)
            .await
            .unwrap()
            .expect("something to archive");
        assert_eq!(archived.checkpoint.events, 4, "{}", b.name);
    }
}

#[tokio::test]
async fn archived_events_leave_linked_segments_and_a_chain_that_goes_on() {
    for b in backends().await {
        let folder = tempfile::tempdir().unwrap();
        let dir = folder.path().join("archive");
        // Events at NOW .. NOW+5; archive those before NOW+3.
        some_events(&b.store, 6).await;
        b.store.seal_events(100).await.unwrap();
        let first = b
            .store
            .archive_events(NOW + 3, &dir, NOW + 10)
            .await
            .unwrap()
            .expect("something to archive");
        let cp = &first.checkpoint;
        assert_eq!(
            (cp.first_pos, cp.through_pos, cp.events),
            (1, 3, 3),
            "{}",
            b.name
        );
        assert_eq!(first.deleted, 3);
        assert_eq!(cp.segment, "events-000000000001-000000000003.jsonl.gz");
        let lines = segment_lines(&first.path);
        assert_eq!(lines.len(), 4, "a header and three events");
        assert!(lines[0].contains("\"last_hash\""), "{}", lines[0]);
        // What is left: three events, the chain going on from the checkpoint.
        let left: Vec<i64> = b
            .store
            .events(None, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.at - NOW)
            .collect();
        assert_eq!(left, [5, 4, 3], "{}", b.name);
        let report = b.store.verify_chain().await.unwrap();
        assert_eq!(
            (
                report.sealed,
                report.archived_through,
                report.broken.clone()
            ),
            (3, 3, None),
            "{}",
            b.name
        );
        // Nothing more before NOW+3.
        assert_eq!(
            b.store
                .archive_events(NOW + 3, &dir, NOW + 11)
                .await
                .unwrap(),
            None
        );

        // New events, sealed, and a second archive of everything.
        some_events(&b.store, 2).await;
        b.store.seal_events(100).await.unwrap();
        let second = b
            .store
            .archive_events(NOW + 100, &dir, NOW + 12)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (second.checkpoint.first_pos, second.checkpoint.through_pos),
            (4, 8),
            "{}",
            b.name
        );
        assert_eq!(second.checkpoint.prev_hash, cp.hash);
        assert!(b.store.events(None, 10).await.unwrap().is_empty());
        let checkpoints = b.store.checkpoints().await.unwrap();
        assert_eq!(checkpoints.len(), 2);
        let report = healthgate_store::verify_archive(&dir, &checkpoints).unwrap();
        assert_eq!(
            (report.segments, report.events, report.broken),
            (2, 8, None),
            "{}",
            b.name
        );
        // The chain goes on after the last checkpoint.
        some_events(&b.store, 1).await;
        b.store.seal_events(100).await.unwrap();
        let report = b.store.verify_chain().await.unwrap();
        assert_eq!(
            (report.sealed, report.archived_through, report.broken),
            (1, 8, None)
        );

        // An edited event in a segment.
        let lines = segment_lines(&first.path);
        let edited: Vec<String> = lines
            .iter()
            .map(|l| l.replace("\"usr-1\"", "\"usr-2\""))
            .collect();
        write_segment(&first.path, &edited);
        let broken = healthgate_store::verify_archive(&dir, &checkpoints)
            .unwrap()
            .broken;
        let (segment, why) = broken.expect("the edit is caught");
        assert_eq!(segment, cp.segment);
        assert!(why.contains("altered"), "{why}");
        // A segment missing.
        std::fs::remove_file(&first.path).unwrap();
        let (segment, why) = healthgate_store::verify_archive(&dir, &checkpoints)
            .unwrap()
            .broken
            .unwrap();
        assert_eq!(
            (segment.as_str(), why.as_str()),
            (cp.segment.as_str(), "the segment is missing")
        );
        // Put back whole: good again; a stray segment no checkpoint names is not.
        write_segment(&first.path, &lines);
        assert_eq!(
            healthgate_store::verify_archive(&dir, &checkpoints)
                .unwrap()
                .broken,
            None
        );
        write_segment(
            &dir.join("events-000000000009-000000000009.jsonl.gz"),
            &lines[..1],
        );
        let (segment, _) = healthgate_store::verify_archive(&dir, &checkpoints)
            .unwrap()
            .broken
            .unwrap();
        assert_eq!(segment, "events-000000000009-000000000009.jsonl.gz");

        // The first row after a checkpoint deleted from the database.
        b.store
            .execute_admin("DELETE FROM events WHERE chain_pos = 9")
            .await
            .unwrap();
        assert!(
            b.store.verify_chain().await.unwrap().broken.is_some(),
            "{}",
            b.name
        );
        b.cleanup().await;
    }
}

#[tokio::test]
async fn deleting_the_newest_sealed_event_is_caught() {
    for b in backends().await {
        some_events(&b.store, 3).await;
        b.store.seal_events(100).await.unwrap();
        b.store
            .execute_admin("DELETE FROM events WHERE chain_pos = 3")
            .await
            .unwrap();
        let report = b.store.verify_chain().await.unwrap();
        assert!(report.broken.is_some(), "{}: {report:?}", b.name);
        b.cleanup().await;
    }
}

// People manage their grants: listing and revoking a person's own grants and
// an organization's organization-level ones.

/// A client named `name`, at `level`.
async fn named_client(
    store: &Store,
    name: &str,
    level: healthgate_core::owner::AuthorizationLevel,
) -> Client {
    let mut c = client(&new_id("app"));
    c.name = name.to_owned();
    c.authorization_level = level;
    store.insert_client(&c).await.unwrap();
    c
}

async fn organization_named(store: &Store, name: &str) -> healthgate_core::org::Organization {
    let org = healthgate_core::org::Organization {
        id: new_id("cln"),
        name: name.to_owned(),
        kind: healthgate_core::org::OrganizationKind::Clinic,
        created_at: NOW,
    };
    store.insert_organization(&org).await.unwrap();
    org
}

/// What a grant stands for: the person alone (`None`), the person in an
/// organization, or (`organization_level`) the organization itself.
fn context(
    user: &User,
    organization: Option<&healthgate_core::org::Organization>,
    organization_level: bool,
) -> healthgate_core::token::GrantContext {
    use healthgate_core::owner::ResourceOwner;
    healthgate_core::token::GrantContext {
        organization_id: organization.map(|o| o.id.clone()),
        owner: Some(match (organization, organization_level) {
            (Some(o), true) => ResourceOwner {
                id: o.id.clone(),
                kind: "Clinic".into(),
            },
            _ => ResourceOwner {
                id: user.id.clone(),
                kind: "Member".into(),
            },
        }),
        organization_level,
        smart: None,
    }
}

/// Stores a code for `user` and `client` at `at`; returns its digest.
async fn pending_code(
    store: &Store,
    client: &Client,
    user: &User,
    scope: &str,
    grant: healthgate_core::token::GrantContext,
    at: i64,
) -> String {
    let code = mint(SecretKind::AuthorizationCode);
    store
        .insert_authorization_code(
            &code.digest,
            &AuthorizationCode {
                family_id: new_id("fam"),
                client_id: client.id.clone(),
                user_id: user.id.clone(),
                redirect_uri: "https://partner.example/cb".into(),
                redirect_uri_provided: true,
                scope: ScopeSet::parse(scope).unwrap(),
                code_challenge: None,
                created_at: at,
                expires_at: at + 600,
                grant,
                nonce: None,
                auth_time: None,
                amr: Default::default(),
                dpop_jkt: None,
            },
        )
        .await
        .unwrap();
    code.digest
}

/// A code issued and redeemed at `at`: a new token family. Returns the
/// tokens issued.
async fn granted(
    store: &Store,
    client: &Client,
    user: &User,
    scope: &str,
    grant: healthgate_core::token::GrantContext,
    at: i64,
) -> NewTokens {
    let digest = pending_code(store, client, user, scope, grant, at).await;
    let t = tokens(true);
    let mut r = redemption(&client.id, &digest);
    r.now = at;
    store.redeem_authorization_code(r, &t).await.unwrap();
    t
}

async fn access_revoked(store: &Store, t: &NewTokens) -> bool {
    store
        .access_token(&t.access.digest)
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some()
}

async fn events_of_kind(store: &Store, kind: &str) -> Vec<healthgate_store::StoredEvent> {
    store
        .events(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind)
        .collect()
}

#[tokio::test]
async fn a_person_sees_each_app_they_authorized_once_and_only_their_own() {
    use healthgate_core::owner::AuthorizationLevel;
    for b in backends().await {
        let s = &b.store;
        let alpha = named_client(s, "alpha", AuthorizationLevel::User).await;
        let beta = named_client(s, "Beta", AuthorizationLevel::User).await;
        let clinic_app = named_client(s, "Clinic app", AuthorizationLevel::Organization).await;
        let alice = user("alice");
        let bob = user("bob");
        s.insert_user(&alice).await.unwrap();
        s.insert_user(&bob).await.unwrap();
        let clinic = organization_named(s, "Northside Clinic").await;

        // Alpha twice (the second time in the clinic), Beta only remembered.
        let first = granted(
            s,
            &alpha,
            &alice,
            "profile_read",
            context(&alice, None, false),
            NOW + 1,
        )
        .await;
        granted(
            s,
            &alpha,
            &alice,
            "profile_write",
            context(&alice, Some(&clinic), false),
            NOW + 5,
        )
        .await;
        let read = ScopeSet::parse("profile_read").unwrap();
        s.remember_consent(&alice.id, &beta.id, &read, None, NOW + 3)
            .await
            .unwrap();
        // An organization-level grant alice made is the clinic's, not hers.
        granted(
            s,
            &clinic_app,
            &alice,
            "profile_read",
            context(&alice, Some(&clinic), true),
            NOW + 4,
        )
        .await;
        s.remember_consent(&alice.id, &clinic_app.id, &read, Some(&clinic.id), NOW + 4)
            .await
            .unwrap();
        // Bob's grant, revoked: not listed for anyone.
        let bobs = granted(
            s,
            &beta,
            &bob,
            "profile_read",
            context(&bob, None, false),
            NOW + 2,
        )
        .await;
        let family = s
            .access_token(&bobs.access.digest)
            .await
            .unwrap()
            .unwrap()
            .family_id;
        assert!(
            s.revoke_token_family(&family, "test", NOW + 6)
                .await
                .unwrap()
        );

        // A refresh is use.
        let refresh = Refresh {
            refresh_digest: &first.refresh.as_ref().unwrap().digest,
            client_id: &alpha.id,
            scope: None,
            redirect_uri: None,
            rotation: RefreshRotation::Immediate,
            ip: None,
            now: NOW + 9,
        };
        s.refresh(refresh, &tokens(true)).await.unwrap();

        let grants = s.grants_of_user(&alice.id).await.unwrap();
        let names: Vec<&str> = grants.iter().map(|g| g.client_name.as_str()).collect();
        assert_eq!(
            names,
            ["alpha", "Beta"],
            "{}: by name, the clinic's grant left out",
            b.name
        );
        let a = &grants[0];
        assert_eq!(a.client_id, alpha.id);
        assert_eq!(
            a.photo_url.as_deref(),
            Some("https://partner.example/p.png")
        );
        assert_eq!(
            a.scope.to_string(),
            "profile_read profile_write",
            "{}",
            b.name
        );
        assert_eq!(a.granted_at, NOW + 1);
        assert_eq!(a.last_used_at, Some(NOW + 9), "{}", b.name);
        assert_eq!(a.organization_id.as_deref(), Some(clinic.id.as_str()));
        assert_eq!(a.organization_name.as_deref(), Some("Northside Clinic"));
        let beta_grant = &grants[1];
        assert_eq!(beta_grant.scope.to_string(), "profile_read");
        assert_eq!(beta_grant.granted_at, NOW + 3);
        assert_eq!(beta_grant.last_used_at, None);
        assert_eq!(beta_grant.organization_id, None);

        assert!(
            s.grants_of_user(&bob.id).await.unwrap().is_empty(),
            "{}",
            b.name
        );
        b.cleanup().await;
    }
}

#[tokio::test]
async fn revoking_a_persons_grant_ends_every_token_code_and_consent_of_it_at_once() {
    use healthgate_core::owner::AuthorizationLevel;
    for b in backends().await {
        let s = &b.store;
        let app = named_client(s, "Partner", AuthorizationLevel::User).await;
        let other = named_client(s, "Other", AuthorizationLevel::User).await;
        let alice = user("alice");
        let bob = user("bob");
        s.insert_user(&alice).await.unwrap();
        s.insert_user(&bob).await.unwrap();
        let one = granted(
            s,
            &app,
            &alice,
            "profile_read",
            context(&alice, None, false),
            NOW + 1,
        )
        .await;
        let two = granted(
            s,
            &app,
            &alice,
            "profile_write",
            context(&alice, None, false),
            NOW + 2,
        )
        .await;
        let read = ScopeSet::parse("profile_read").unwrap();
        s.remember_consent(&alice.id, &app.id, &read, None, NOW + 1)
            .await
            .unwrap();
        let pending = pending_code(
            s,
            &app,
            &alice,
            "profile_read",
            context(&alice, None, false),
            NOW + 3,
        )
        .await;
        let bobs = granted(
            s,
            &app,
            &bob,
            "profile_read",
            context(&bob, None, false),
            NOW + 1,
        )
        .await;
        s.remember_consent(&bob.id, &app.id, &read, None, NOW + 1)
            .await
            .unwrap();
        let unrelated = granted(
            s,
            &other,
            &alice,
            "profile_read",
            context(&alice, None, false),
            NOW + 1,
        )
        .await;

        assert!(
            s.revoke_user_grant(&alice.id, &app.id, Some("203.0.113.9"), NOW + 20)
                .await
                .unwrap(),
            "{}",
            b.name
        );
        assert!(
            access_revoked(s, &one).await && access_revoked(s, &two).await,
            "{}",
            b.name
        );
        let refresh = Refresh {
            refresh_digest: &two.refresh.as_ref().unwrap().digest,
            client_id: &app.id,
            scope: None,
            redirect_uri: None,
            rotation: RefreshRotation::Immediate,
            ip: None,
            now: NOW + 21,
        };
        assert!(
            invalid_grant(s.refresh(refresh, &tokens(true)).await),
            "{}",
            b.name
        );
        let mut late = redemption(&app.id, &pending);
        late.now = NOW + 21;
        assert!(
            invalid_grant(s.redeem_authorization_code(late, &tokens(true)).await),
            "{}: a code issued before the revocation is worthless",
            b.name
        );
        assert!(
            s.consent(&alice.id, &app.id).await.unwrap().is_none(),
            "{}",
            b.name
        );
        assert!(
            s.grants_of_user(&alice.id)
                .await
                .unwrap()
                .iter()
                .all(|g| g.client_id != app.id)
        );

        // Nobody else's grant, and no other app, is touched.
        assert!(!access_revoked(s, &bobs).await, "{}", b.name);
        assert!(s.consent(&bob.id, &app.id).await.unwrap().is_some());
        assert!(!access_revoked(s, &unrelated).await);

        let revoked = events_of_kind(s, "consent.revoked").await;
        assert_eq!(revoked.len(), 1, "{}", b.name);
        let e = &revoked[0];
        assert_eq!(e.actor_user_id.as_deref(), Some(alice.id.as_str()));
        assert_eq!(e.subject.as_deref(), Some(alice.id.as_str()));
        assert_eq!(e.client_id.as_deref(), Some(app.id.as_str()));
        assert_eq!(e.ip.as_deref(), Some("203.0.113.9"));
        assert_eq!(e.at, NOW + 20);
        let families = events_of_kind(s, "token.family_revoked").await;
        assert_eq!(families.len(), 2, "{}: one per family", b.name);

        // Again: nothing left, nothing recorded. Bob cannot be reached
        // through alice's id either way.
        assert!(
            !s.revoke_user_grant(&alice.id, &app.id, None, NOW + 30)
                .await
                .unwrap()
        );
        assert_eq!(
            events_of_kind(s, "consent.revoked").await.len(),
            1,
            "{}",
            b.name
        );
        b.cleanup().await;
    }
}

#[tokio::test]
async fn organization_grants_are_listed_and_revoked_for_the_organization_only() {
    use healthgate_core::owner::AuthorizationLevel;
    for b in backends().await {
        let s = &b.store;
        let app = named_client(s, "Clinic records", AuthorizationLevel::Organization).await;
        let mut ada = user("ada");
        ada.name = Some("Ada Admin".into());
        s.insert_user(&ada).await.unwrap();
        let clinic = organization_named(s, "Northside Clinic").await;
        let elsewhere = organization_named(s, "Southside Clinic").await;
        s.set_membership(&clinic.id, &ada.id, "admin", None, NOW)
            .await
            .unwrap();
        s.set_membership(&elsewhere.id, &ada.id, "admin", None, NOW)
            .await
            .unwrap();
        let ours = granted(
            s,
            &app,
            &ada,
            "profile_read",
            context(&ada, Some(&clinic), true),
            NOW + 1,
        )
        .await;
        let read = ScopeSet::parse("profile_read").unwrap();
        s.remember_consent(&ada.id, &app.id, &read, Some(&clinic.id), NOW + 1)
            .await
            .unwrap();
        let pending = pending_code(
            s,
            &app,
            &ada,
            "profile_read",
            context(&ada, Some(&clinic), true),
            NOW + 2,
        )
        .await;
        let theirs = granted(
            s,
            &app,
            &ada,
            "profile_read",
            context(&ada, Some(&elsewhere), true),
            NOW + 3,
        )
        .await;

        let listed = s.organization_grants(&clinic.id).await.unwrap();
        assert_eq!(listed.len(), 1, "{}", b.name);
        let g = &listed[0];
        assert_eq!(
            (g.client_id.as_str(), g.client_name.as_str()),
            (app.id.as_str(), "Clinic records")
        );
        assert_eq!(g.scope.to_string(), "profile_read");
        assert_eq!(g.granted_by.as_deref(), Some(ada.id.as_str()));
        assert_eq!(g.granted_by_name.as_deref(), Some("Ada Admin"));
        assert_eq!(g.created_at, NOW + 1);
        assert!(g.live);
        assert!(
            s.grants_of_user(&ada.id).await.unwrap().is_empty(),
            "{}",
            b.name
        );

        // It is not ada's own grant: her personal revocation leaves it.
        assert!(
            !s.revoke_user_grant(&ada.id, &app.id, None, NOW + 5)
                .await
                .unwrap(),
            "{}",
            b.name
        );
        assert!(!access_revoked(s, &ours).await);

        assert!(
            s.revoke_organization_grant(
                &clinic.id,
                &app.id,
                &ada.id,
                Some("198.51.100.7"),
                NOW + 10
            )
            .await
            .unwrap(),
            "{}",
            b.name
        );
        assert!(access_revoked(s, &ours).await, "{}", b.name);
        let mut late = redemption(&app.id, &pending);
        late.now = NOW + 11;
        assert!(
            invalid_grant(s.redeem_authorization_code(late, &tokens(true)).await),
            "{}",
            b.name
        );
        assert!(
            s.consent(&ada.id, &app.id).await.unwrap().is_none(),
            "{}",
            b.name
        );
        assert!(!s.organization_grants(&clinic.id).await.unwrap()[0].live);
        // The other clinic's grant stands.
        assert!(!access_revoked(s, &theirs).await, "{}", b.name);
        assert!(s.organization_grants(&elsewhere.id).await.unwrap()[0].live);

        let revoked = events_of_kind(s, "consent.revoked").await;
        assert_eq!(revoked.len(), 1, "{}", b.name);
        let e = &revoked[0];
        assert_eq!(e.organization_id.as_deref(), Some(clinic.id.as_str()));
        assert_eq!(e.actor_user_id.as_deref(), Some(ada.id.as_str()));
        assert_eq!(e.client_id.as_deref(), Some(app.id.as_str()));
        assert_eq!(e.ip.as_deref(), Some("198.51.100.7"));
        assert!(
            !s.revoke_organization_grant(&clinic.id, &app.id, &ada.id, None, NOW + 12)
                .await
                .unwrap()
        );
        b.cleanup().await;
    }
}

/// A signed-in session of `user_id` started at `created_at`.
fn session_of(digest: &str, user_id: &str, created_at: i64, expires_at: i64) -> Session {
    Session {
        id_digest: digest.into(),
        user_id: Some(user_id.to_owned()),
        csrf_token: format!("csrf-{digest}"),
        auth_time: Some(created_at),
        created_at,
        expires_at,
        user_agent: Some(format!("Agent {digest}")),
        ip: Some("192.0.2.9".into()),
        ..Default::default()
    }
}

fn digests(sessions: &[Session]) -> Vec<&str> {
    sessions.iter().map(|s| s.id_digest.as_str()).collect()
}

#[tokio::test]
async fn a_person_lists_and_ends_their_own_live_sessions_and_no_one_elses() {
    for b in backends().await {
        let s = &b.store;
        let (alice, bob) = (user("alice"), user("bob"));
        s.insert_user(&alice).await.unwrap();
        s.insert_user(&bob).await.unwrap();
        for session in [
            session_of("a-old", &alice.id, NOW - 100, NOW + 1000),
            session_of("a-new", &alice.id, NOW - 10, NOW + 1000),
            session_of("a-expired", &alice.id, NOW - 5000, NOW),
            session_of("b-1", &bob.id, NOW - 50, NOW + 1000),
        ] {
            s.replace_session(None, &session).await.unwrap();
        }
        s.replace_session(None, &session("anonymous", NOW + 1000))
            .await
            .unwrap();

        let listed = s.sessions_of_user(&alice.id, NOW).await.unwrap();
        assert_eq!(
            digests(&listed),
            ["a-new", "a-old"],
            "{}: live ones only, newest first",
            b.name
        );
        assert_eq!(
            listed[0],
            session_of("a-new", &alice.id, NOW - 10, NOW + 1000),
            "{}: every field",
            b.name
        );

        // Alice names Bob's session: the WHERE names her, so nothing ends.
        assert!(
            !s.end_session_of_user(&alice.id, "b-1", None, NOW)
                .await
                .unwrap(),
            "{}",
            b.name
        );
        assert!(s.session("b-1", NOW).await.unwrap().is_some(), "{}", b.name);
        assert!(
            !s.end_session_of_user(&alice.id, "no-such", None, NOW)
                .await
                .unwrap()
        );
        assert!(events_of_kind(s, "session.ended").await.is_empty());

        assert!(
            s.end_session_of_user(&alice.id, "a-old", Some("198.51.100.4"), NOW)
                .await
                .unwrap()
        );
        assert!(s.session("a-old", NOW).await.unwrap().is_none());
        let ended = events_of_kind(s, "session.ended").await;
        assert_eq!(ended.len(), 1, "{}", b.name);
        assert_eq!(ended[0].actor_user_id.as_deref(), Some(alice.id.as_str()));
        assert_eq!(ended[0].subject.as_deref(), Some(alice.id.as_str()));
        assert_eq!(ended[0].ip.as_deref(), Some("198.51.100.4"));
        let data: serde_json::Value =
            serde_json::from_str(ended[0].data.as_deref().unwrap()).unwrap();
        assert_eq!(data, serde_json::json!({"which": "one", "ended": 1}));

        // Everywhere else: every other session of hers, none of Bob's.
        for digest in ["a-2", "a-3"] {
            s.replace_session(None, &session_of(digest, &alice.id, NOW, NOW + 1000))
                .await
                .unwrap();
        }
        assert_eq!(
            s.end_sessions_of_user(&alice.id, Some("a-new"), None, NOW)
                .await
                .unwrap(),
            2,
            "{}",
            b.name
        );
        assert_eq!(
            digests(&s.sessions_of_user(&alice.id, NOW).await.unwrap()),
            ["a-new"]
        );
        assert!(s.session("b-1", NOW).await.unwrap().is_some());
        assert!(s.session("anonymous", NOW).await.unwrap().is_some());

        // Everywhere: the kept one too.
        assert_eq!(
            s.end_sessions_of_user(&alice.id, None, None, NOW)
                .await
                .unwrap(),
            1
        );
        assert!(s.sessions_of_user(&alice.id, NOW).await.unwrap().is_empty());
        assert_eq!(
            digests(&s.sessions_of_user(&bob.id, NOW).await.unwrap()),
            ["b-1"],
            "{}",
            b.name
        );
        let whiches: Vec<serde_json::Value> = events_of_kind(s, "session.ended")
            .await
            .iter()
            .map(|e| serde_json::from_str(e.data.as_deref().unwrap()).unwrap())
            .collect();
        assert_eq!(
            whiches,
            [
                serde_json::json!({"which": "everywhere", "ended": 1}),
                serde_json::json!({"which": "everywhere_else", "ended": 2}),
                serde_json::json!({"which": "one", "ended": 1}),
            ],
            "{}: newest first",
            b.name
        );
        b.cleanup().await;
    }
}

#[tokio::test]
async fn a_profile_update_records_which_fields_changed_and_never_their_values() {
    for b in backends().await {
        let s = &b.store;
        let alice = user("alice");
        s.insert_user(&alice).await.unwrap();

        let changed = s
            .update_profile(
                &alice.id,
                Some("Dr. Alice Example"),
                Some("alice@example.org"),
                Some("192.0.2.1"),
                NOW,
            )
            .await
            .unwrap();
        assert_eq!(changed, ["name", "email"], "{}", b.name);
        let stored = s.user(&alice.id).await.unwrap().unwrap();
        assert_eq!(stored.name.as_deref(), Some("Dr. Alice Example"));
        assert_eq!(stored.email.as_deref(), Some("alice@example.org"));

        // The same values again change nothing and write no event.
        let same = s
            .update_profile(
                &alice.id,
                Some("Dr. Alice Example"),
                Some("alice@example.org"),
                None,
                NOW + 1,
            )
            .await
            .unwrap();
        assert!(same.is_empty(), "{}", b.name);
        // Clearing the name changes only the name.
        let cleared = s
            .update_profile(&alice.id, None, Some("alice@example.org"), None, NOW + 2)
            .await
            .unwrap();
        assert_eq!(cleared, ["name"]);
        assert_eq!(s.user(&alice.id).await.unwrap().unwrap().name, None);
        // Nobody by that id: nothing.
        assert!(
            s.update_profile("usr-nobody", Some("X"), None, None, NOW)
                .await
                .unwrap()
                .is_empty()
        );

        let updated = events_of_kind(s, "user.updated").await;
        assert_eq!(updated.len(), 2, "{}", b.name);
        assert_eq!(updated[1].actor_user_id.as_deref(), Some(alice.id.as_str()));
        assert_eq!(updated[1].subject.as_deref(), Some(alice.id.as_str()));
        assert_eq!(updated[1].ip.as_deref(), Some("192.0.2.1"));
        let data = updated[1].data.as_deref().unwrap();
        assert_eq!(data, r#"{"changed":["name","email"]}"#);
        assert!(
            !data.contains("alice@example.org"),
            "no values in the trail"
        );
        b.cleanup().await;
    }
}

#[tokio::test]
async fn a_password_change_ends_every_session_but_the_fresh_one_unless_the_hash_moved_on() {
    for b in backends().await {
        let s = &b.store;
        let mut alice = user("alice");
        alice.password_hash = Some("$argon2id$old".into());
        let bob = user("bob");
        s.insert_user(&alice).await.unwrap();
        s.insert_user(&bob).await.unwrap();
        for session in [
            session_of("here", &alice.id, NOW - 20, NOW + 1000),
            session_of("elsewhere", &alice.id, NOW - 10, NOW + 1000),
            session_of("bobs", &bob.id, NOW - 10, NOW + 1000),
        ] {
            s.replace_session(None, &session).await.unwrap();
        }
        let fresh = session_of("fresh", &alice.id, NOW, NOW + 1000);

        // A stale expected hash (the password changed meanwhile): nothing.
        assert!(
            !s.change_password(
                &alice.id,
                "$argon2id$stale",
                "$argon2id$new",
                &fresh,
                None,
                NOW
            )
            .await
            .unwrap(),
            "{}",
            b.name
        );
        assert_eq!(
            s.user(&alice.id).await.unwrap().unwrap().password_hash,
            alice.password_hash
        );
        assert_eq!(s.sessions_of_user(&alice.id, NOW).await.unwrap().len(), 2);
        assert!(s.session("fresh", NOW).await.unwrap().is_none());
        assert!(events_of_kind(s, "user.password_changed").await.is_empty());

        assert!(
            s.change_password(
                &alice.id,
                "$argon2id$old",
                "$argon2id$new",
                &fresh,
                Some("192.0.2.3"),
                NOW
            )
            .await
            .unwrap()
        );
        assert_eq!(
            s.user(&alice.id)
                .await
                .unwrap()
                .unwrap()
                .password_hash
                .as_deref(),
            Some("$argon2id$new")
        );
        assert_eq!(
            digests(&s.sessions_of_user(&alice.id, NOW).await.unwrap()),
            ["fresh"],
            "{}: the old sessions, this browser's old one too, are gone",
            b.name
        );
        assert_eq!(s.session("fresh", NOW).await.unwrap(), Some(fresh.clone()));
        assert!(s.session("bobs", NOW).await.unwrap().is_some());
        let changed = events_of_kind(s, "user.password_changed").await;
        assert_eq!(changed.len(), 1, "{}", b.name);
        assert_eq!(changed[0].actor_user_id.as_deref(), Some(alice.id.as_str()));
        assert_eq!(changed[0].ip.as_deref(), Some("192.0.2.3"));
        assert_eq!(
            changed[0].data.as_deref(),
            Some(r#"{"other_sessions_ended":1}"#)
        );
        assert!(!changed[0].data.as_deref().unwrap().contains("argon2"));

        // The old hash is no longer the stored one: a replay changes nothing.
        assert!(
            !s.change_password(&alice.id, "$argon2id$old", "$argon2id$x", &fresh, None, NOW)
                .await
                .unwrap()
        );
        b.cleanup().await;
    }
}

#[tokio::test]
async fn a_reset_password_is_temporary_until_the_person_changes_it() {
    for b in backends().await {
        let s = &b.store;
        let mut alice = user("alice");
        alice.password_hash = Some("$argon2id$own".into());
        let bob = user("bob");
        s.insert_user(&alice).await.unwrap();
        s.insert_user(&bob).await.unwrap();
        assert_eq!(reset_at(s, &alice.id).await, None);
        assert_eq!(reset_at(s, "usr-none").await, None);

        // A partner setting a password does not make it temporary.
        assert!(
            s.set_password(&bob.id, "$argon2id$partner", NOW)
                .await
                .unwrap()
        );
        assert_eq!(reset_at(s, &bob.id).await, None, "{}", b.name);

        // An operator's reset does, with the password, in its transaction.
        let by = Actor::user(&bob.id, None);
        assert!(
            s.reset_password(&alice.id, "$argon2id$temporary", by, NOW + 1)
                .await
                .unwrap()
        );
        assert_eq!(reset_at(s, &alice.id).await, Some(NOW + 1), "{}", b.name);
        assert_eq!(reset_at(s, &bob.id).await, None);

        // A change that does not happen (the hash moved on) leaves it.
        let fresh = session_of("fresh", &alice.id, NOW + 2, NOW + 1000);
        assert!(
            !s.change_password(
                &alice.id,
                "$argon2id$own",
                "$argon2id$x",
                &fresh,
                None,
                NOW + 2
            )
            .await
            .unwrap()
        );
        assert_eq!(reset_at(s, &alice.id).await, Some(NOW + 1));

        // The person's own change clears it, with the new hash.
        assert!(
            s.change_password(
                &alice.id,
                "$argon2id$temporary",
                "$argon2id$chosen",
                &fresh,
                None,
                NOW + 3
            )
            .await
            .unwrap()
        );
        assert_eq!(reset_at(s, &alice.id).await, None, "{}", b.name);
        assert_eq!(
            s.user(&alice.id)
                .await
                .unwrap()
                .unwrap()
                .password_hash
                .as_deref(),
            Some("$argon2id$chosen")
        );

        // A second reset makes the new password temporary again.
        assert!(
            s.reset_password(&alice.id, "$argon2id$again", Actor::system(), NOW + 4)
                .await
                .unwrap()
        );
        assert_eq!(reset_at(s, &alice.id).await, Some(NOW + 4));
        b.cleanup().await;
    }
}

// The operators' functions (the admin console and the CLI): suspending
// apps, finding and changing accounts, memberships changed on someone's
// behalf, the filtered audit log and webhook health.

/// A pending integration of `client` in a new practice, started by
/// `admin`, with an unused connect code; returns the organization id and
/// the code.
async fn pending_integration(
    store: &Store,
    client: &Client,
    admin: &User,
) -> (String, healthgate_core::secret::Minted) {
    use healthgate_core::integration::ConnectMode;
    let org = organization_named(store, "Connecting Practice").await;
    let code = mint(SecretKind::ConnectCode);
    store
        .start_integration(
            &org.id,
            &client.id,
            &admin.id,
            &code,
            ConnectMode::Manual,
            NOW + 600,
            None,
            NOW,
        )
        .await
        .unwrap();
    (org.id, code)
}

/// A practice API key for `client` in a new practice (a connect code
/// exchanged); returns the key's digest.
async fn practice_key(store: &Store, client: &Client, admin: &User) -> String {
    let (_, code) = pending_integration(store, client, admin).await;
    let key = mint(SecretKind::ApiKey);
    store
        .exchange_connect_code(
            healthgate_core::integration::ConnectExchange {
                code_digest: &code.digest,
                client_id: &client.id,
                activate: true,
                now: NOW,
            },
            &key,
        )
        .await
        .unwrap();
    key.digest
}

/// A partner app, a practice admin, and a pending integration of the app
/// with an unused connect code; returns the app, the admin, the
/// organization id and the code.
async fn connect_code(store: &Store) -> (Client, User, String, healthgate_core::secret::Minted) {
    let client = client(&new_id("app"));
    store.insert_client(&client).await.unwrap();
    let admin = user("connector");
    store.insert_user(&admin).await.unwrap();
    let (org, code) = pending_integration(store, &client, &admin).await;
    (client, admin, org, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_connect_code_exchanges_have_one_winner_and_the_replays_revoke_its_key() {
    use healthgate_core::integration::ConnectExchange;
    for b in backends().await {
        let s = &b.store;
        let (c, _, org, code) = connect_code(s).await;
        let mut handles = Vec::new();
        for _ in 0..20 {
            let (store, client_id, digest) = (s.clone(), c.id.clone(), code.digest.clone());
            handles.push(tokio::spawn(async move {
                let key = mint(SecretKind::ApiKey);
                let exchange = ConnectExchange {
                    code_digest: &digest,
                    client_id: &client_id,
                    activate: true,
                    now: NOW + 1,
                };
                store
                    .exchange_connect_code(exchange, &key)
                    .await
                    .map(|()| key)
            }));
        }
        let mut winners = Vec::new();
        for h in handles {
            match h.await.unwrap() {
                Ok(key) => winners.push(key),
                Err(GrantError::OAuth(e)) => assert_eq!(e.code, ErrorCode::InvalidGrant),
                Err(GrantError::Store(e)) => panic!("{}: storage error {e}", b.name),
            }
        }
        assert_eq!(winners.len(), 1, "{}", b.name);
        let integration = s.integrations_of_organization(&org).await.unwrap();
        assert_eq!(integration.len(), 1, "{}", b.name);
        let keys = s.api_keys(&integration[0].id).await.unwrap();
        assert_eq!(keys.len(), 1, "{}: one key issued", b.name);
        // Every later presentation was a replay: the key the code produced
        // is revoked (RFC 6749 §4.1.2 applied to connect codes).
        let presented = s
            .api_key_by_digest(&winners[0].digest)
            .await
            .unwrap()
            .unwrap();
        assert!(presented.key.revoked_at.is_some(), "{}", b.name);
        b.cleanup().await;
    }
}

#[tokio::test]
async fn a_connect_code_killed_after_it_was_read_is_decided_again_and_issues_nothing() {
    use healthgate_core::integration::{self, ConnectExchange};
    use healthgate_store::Applied;
    for b in backends().await {
        let s = &b.store;
        let (c, admin, org, code) = connect_code(s).await;
        let exchange = ConnectExchange {
            code_digest: &code.digest,
            client_id: &c.id,
            activate: true,
            now: NOW + 1,
        };
        let key = mint(SecretKind::ApiKey);
        let read = s.connect_code_for_exchange(&code.digest).await.unwrap();
        let decided = integration::exchange_connect_code(read.as_ref(), exchange, &key);
        assert!(decided.outcome.is_ok(), "{}", b.name);
        // The practice disconnects between the read and the write.
        let id = read.unwrap().integration.id;
        s.deactivate_integration(&id, Some(&admin.id), None, NOW + 1)
            .await
            .unwrap();
        assert_eq!(
            s.apply_connect(&decided.write).await.unwrap(),
            Applied::Stale,
            "{}",
            b.name
        );
        assert!(s.api_keys(&id).await.unwrap().is_empty(), "{}", b.name);
        assert_eq!(
            s.api_key_by_digest(&key.digest).await.unwrap(),
            None,
            "{}",
            b.name
        );
        // Decided again: a used code, which produced no key.
        let err = s.exchange_connect_code(exchange, &key).await.unwrap_err();
        assert!(
            matches!(&err, GrantError::OAuth(e) if &*e.description == "the code has already been used"),
            "{}: {err}",
            b.name
        );
        let integrations = s.integrations_of_organization(&org).await.unwrap();
        assert_eq!(
            integrations[0].status,
            healthgate_core::integration::IntegrationStatus::Disconnected
        );
        b.cleanup().await;
    }
}

fn data_of(e: &healthgate_store::StoredEvent) -> serde_json::Value {
    serde_json::from_str(e.data.as_deref().unwrap_or("null")).unwrap()
}

#[tokio::test]
async fn suspending_an_app_revokes_its_families_expires_its_codes_and_stops_its_keys_until_restored()
 {
    use healthgate_core::owner::AuthorizationLevel;
    use healthgate_store::Suspension;
    for b in backends().await {
        let s = &b.store;
        let mut c = client(&new_id("app"));
        c.listing.state = healthgate_core::listing::ListingState::Approved;
        c.connect_redirect_url = Some("https://partner.example/connect?code=".into());
        s.insert_client(&c).await.unwrap();
        let other = named_client(s, "Other", AuthorizationLevel::User).await;
        let alice = user("alice");
        let olivia = user("olivia");
        s.insert_user(&alice).await.unwrap();
        s.insert_user(&olivia).await.unwrap();
        let theirs = granted(s, &c, &alice, "profile_read", Default::default(), NOW).await;
        let pending = pending_code(s, &c, &alice, "profile_read", Default::default(), NOW).await;
        let cc = tokens(false);
        s.issue_client_token(&c.id, &ScopeSet::parse("profile_read").unwrap(), &cc, NOW)
            .await
            .unwrap();
        let unaffected = granted(s, &other, &alice, "profile_read", Default::default(), NOW).await;
        let key = practice_key(s, &c, &olivia).await;
        assert!(
            s.api_key_by_digest(&key)
                .await
                .unwrap()
                .unwrap()
                .is_usable()
        );

        let by = Actor::user(&olivia.id, Some("192.0.2.1"));
        let done = s
            .suspend_client(&c.id, Some("phishing reported"), by, NOW + 10)
            .await
            .unwrap();
        assert_eq!(
            done,
            Suspension::Suspended {
                families_revoked: 2,
                codes_expired: 1
            },
            "{}",
            b.name
        );
        assert_eq!(
            s.client(&c.id).await.unwrap().unwrap().suspended_at,
            Some(NOW + 10)
        );
        assert!(access_revoked(s, &theirs).await, "{}", b.name);
        assert!(access_revoked(s, &cc).await, "{}", b.name);
        assert!(
            !access_revoked(s, &unaffected).await,
            "{}: other apps",
            b.name
        );
        let refresh = s
            .refresh(
                refresh_of(&c.id, &theirs, RefreshRotation::Immediate),
                &tokens(true),
            )
            .await;
        assert!(invalid_grant(refresh), "{}", b.name);
        let mut r = redemption(&c.id, &pending);
        r.now = NOW + 11;
        assert!(invalid_grant(
            s.redeem_authorization_code(r, &tokens(true)).await
        ));
        let presented = s.api_key_by_digest(&key).await.unwrap().unwrap();
        assert!(presented.client_suspended && !presented.is_usable());
        assert!(presented.key.revoked_at.is_none(), "the key itself is kept");
        assert!(
            !s.published_clients()
                .await
                .unwrap()
                .iter()
                .any(|p| p.id == c.id)
        );
        let events = events_of_kind(s, "client.suspended").await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].actor_user_id.as_deref(), Some(olivia.id.as_str()));
        assert_eq!(events[0].ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(events[0].client_id.as_deref(), Some(c.id.as_str()));
        assert_eq!(
            data_of(&events[0]),
            serde_json::json!({"families_revoked": 2, "codes_expired": 1, "reason": "phishing reported"})
        );

        // Twice is once; an unknown app is said to be unknown.
        assert_eq!(
            s.suspend_client(&c.id, None, by, NOW + 20).await.unwrap(),
            Suspension::AlreadySuspended(NOW + 10)
        );
        assert_eq!(
            s.suspend_client("app-none", None, by, NOW).await.unwrap(),
            Suspension::NoSuchClient
        );
        assert_eq!(events_of_kind(s, "client.suspended").await.len(), 1);

        assert!(s.restore_client(&c.id, by, NOW + 30).await.unwrap());
        assert!(!s.restore_client(&c.id, by, NOW + 31).await.unwrap());
        assert!(!s.restore_client("app-none", by, NOW).await.unwrap());
        assert_eq!(s.client(&c.id).await.unwrap().unwrap().suspended_at, None);
        assert_eq!(events_of_kind(s, "client.restored").await.len(), 1);
        assert!(
            access_revoked(s, &theirs).await,
            "what was revoked stays so"
        );
        assert!(
            s.api_key_by_digest(&key)
                .await
                .unwrap()
                .unwrap()
                .is_usable()
        );
        assert!(
            s.published_clients()
                .await
                .unwrap()
                .iter()
                .any(|p| p.id == c.id)
        );
        let fresh = granted(s, &c, &alice, "profile_read", Default::default(), NOW + 40).await;
        assert!(!access_revoked(s, &fresh).await, "{}", b.name);
        b.cleanup().await;
    }
}

#[tokio::test]
async fn people_are_found_by_any_part_of_their_username_name_or_email_in_any_case() {
    for b in backends().await {
        let s = &b.store;
        for (username, name, email) in [
            ("alice", Some("Alice Liddell"), Some("alice@wonder.example")),
            ("bob", None, Some("BOB@Builders.example")),
            ("carol_c", Some("Carol 100%"), None),
            ("dave", Some("Dr. Dave"), Some("dave@wonder.example")),
        ] {
            let mut u = user(username);
            u.name = name.map(str::to_owned);
            u.email = email.map(str::to_owned);
            s.insert_user(&u).await.unwrap();
        }
        let found = |q: &'static str, limit: i64, offset: i64| async move {
            let (users, total) = s.search_users(q, limit, offset).await.unwrap();
            (
                users.into_iter().map(|u| u.username).collect::<Vec<_>>(),
                total,
            )
        };
        assert_eq!(
            found("", 10, 0).await,
            (
                vec![
                    "alice".into(),
                    "bob".into(),
                    "carol_c".into(),
                    "dave".into()
                ],
                4
            ),
            "{}: everyone, by username",
            b.name
        );
        assert_eq!(
            found("WONDER", 10, 0).await,
            (vec!["alice".into(), "dave".into()], 2)
        );
        assert_eq!(found("builders.EX", 10, 0).await, (vec!["bob".into()], 1));
        assert_eq!(found("liddell", 10, 0).await, (vec!["alice".into()], 1));
        assert_eq!(
            found(" dr. ", 10, 0).await,
            (vec!["dave".into()], 1),
            "trimmed"
        );
        // `%`, `_` and `\` are themselves, not patterns.
        assert_eq!(found("_", 10, 0).await, (vec!["carol_c".into()], 1));
        assert_eq!(found("100%", 10, 0).await, (vec!["carol_c".into()], 1));
        assert_eq!(found("%", 10, 0).await, (vec!["carol_c".into()], 1));
        assert_eq!(found("\\", 10, 0).await, (vec![], 0));
        assert_eq!(found("' OR 1=1 --", 10, 0).await, (vec![], 0));
        // Paging: the total counts every match.
        assert_eq!(
            found("", 2, 0).await,
            (vec!["alice".into(), "bob".into()], 4)
        );
        assert_eq!(
            found("", 2, 2).await,
            (vec!["carol_c".into(), "dave".into()], 4)
        );
        assert_eq!(found("", 2, 4).await, (vec![], 4));
        b.cleanup().await;
    }
}

#[tokio::test]
async fn account_changes_made_by_an_operator_are_recorded_with_the_operator() {
    for b in backends().await {
        let s = &b.store;
        let alice = user("alice");
        let olivia = user("olivia");
        s.insert_user(&alice).await.unwrap();
        s.insert_user(&olivia).await.unwrap();
        let by = Actor::user(&olivia.id, Some("192.0.2.9"));
        let signed_in = |digest: &str| Session {
            id_digest: digest.into(),
            user_id: Some(alice.id.clone()),
            csrf_token: "csrf".into(),
            auth_time: Some(NOW),
            created_at: NOW,
            expires_at: NOW + 3600,
            user_agent: None,
            ip: None,
            ..Default::default()
        };

        s.replace_session(None, &signed_in("s1")).await.unwrap();
        assert!(s.lock_user_by(&alice.id, by, NOW + 1).await.unwrap());
        assert!(
            s.session("s1", NOW + 1).await.unwrap().is_none(),
            "sessions end"
        );
        assert!(!s.lock_user_by(&alice.id, by, NOW + 2).await.unwrap());
        assert_eq!(
            s.user(&alice.id).await.unwrap().unwrap().locked_at,
            Some(NOW + 1),
            "{}",
            b.name
        );
        assert_eq!(
            s.unlock_user(&alice.id, by, NOW + 3).await.unwrap(),
            Unlocked {
                operator_lock: true,
                failed_sign_ins: false
            }
        );
        assert!(!s.unlock_user(&alice.id, by, NOW + 4).await.unwrap().any());
        assert!(s.user(&alice.id).await.unwrap().unwrap().is_active());

        s.replace_session(None, &signed_in("s2")).await.unwrap();
        assert!(
            s.reset_password(&alice.id, "$argon2id$new", by, NOW + 5)
                .await
                .unwrap()
        );
        assert!(
            s.session("s2", NOW + 5).await.unwrap().is_none(),
            "sessions end"
        );
        assert_eq!(
            s.user(&alice.id)
                .await
                .unwrap()
                .unwrap()
                .password_hash
                .as_deref(),
            Some("$argon2id$new")
        );
        assert!(
            !s.reset_password("usr-none", "$argon2id$x", by, NOW)
                .await
                .unwrap()
        );

        assert!(s.set_operator(&alice.id, true, by, NOW + 6).await.unwrap());
        assert!(s.user(&alice.id).await.unwrap().unwrap().operator);
        assert!(!s.set_operator(&alice.id, true, by, NOW + 7).await.unwrap());
        assert!(
            s.set_operator(&alice.id, false, Actor::system(), NOW + 8)
                .await
                .unwrap()
        );
        assert!(!s.user(&alice.id).await.unwrap().unwrap().operator);

        // One event per change, none for what changed nothing.
        let trail: Vec<(String, Option<String>, Option<String>)> = s
            .events(Some(NOW + 1), 100)
            .await
            .unwrap()
            .into_iter()
            .rev()
            .map(|e| (e.kind, e.actor_user_id, e.ip))
            .collect();
        let by_olivia = |kind: &str| {
            (
                kind.to_owned(),
                Some(olivia.id.clone()),
                Some("192.0.2.9".to_owned()),
            )
        };
        assert_eq!(
            trail,
            [
                by_olivia("user.locked"),
                by_olivia("user.unlocked"),
                by_olivia("user.password_reset"),
                by_olivia("user.operator_granted"),
                ("user.operator_revoked".to_owned(), None, None),
            ],
            "{}",
            b.name
        );
        for e in s.events(Some(NOW + 1), 100).await.unwrap() {
            assert_eq!(e.subject.as_deref(), Some(alice.id.as_str()));
            assert!(!format!("{e:?}").contains("argon2"), "no hash in the trail");
        }
        b.cleanup().await;
    }
}

#[tokio::test]
async fn unlocking_an_account_also_lifts_the_lock_its_failed_sign_ins_put_on_it() {
    for b in backends().await {
        let s = &b.store;
        let alice = user("alice");
        let bob = user("bob");
        let olivia = user("olivia");
        for u in [&alice, &bob, &olivia] {
            s.insert_user(u).await.unwrap();
        }
        let by = Actor::user(&olivia.id, Some("192.0.2.9"));
        let fail = |who: &'static str, at: i64| async move {
            s.record_failure(ThrottleKind::SignIn, who, at, at - 900)
                .await
                .unwrap()
        };
        // alice's username is locked; bob has failed but is not locked;
        // "nobody" has no account; alice's client id namesake is another
        // kind of run.
        for i in 0..3 {
            fail("alice", NOW + i).await;
            fail("nobody", NOW + i).await;
        }
        fail("bob", NOW).await;
        s.block(ThrottleKind::SignIn, "alice", NOW + 900)
            .await
            .unwrap();
        s.block(ThrottleKind::SignIn, "nobody", NOW + 900)
            .await
            .unwrap();
        s.record_failure(ThrottleKind::Client, "alice", NOW, NOW - 60)
            .await
            .unwrap();
        s.block(ThrottleKind::Client, "alice", NOW + 300)
            .await
            .unwrap();

        // A page of usernames, and which of them are refused now.
        let locks = s
            .blocked_among(
                ThrottleKind::SignIn,
                &["alice", "bob", "olivia", "nobody"],
                NOW + 5,
            )
            .await
            .unwrap();
        assert_eq!(locks.len(), 2, "{}", b.name);
        assert_eq!(locks.get("alice"), Some(&(NOW + 900)));
        assert_eq!(locks.get("nobody"), Some(&(NOW + 900)));
        assert!(
            s.blocked_among(ThrottleKind::SignIn, &["alice"], NOW + 900)
                .await
                .unwrap()
                .is_empty(),
            "a lock that ended refuses nobody"
        );
        assert!(
            s.blocked_among(ThrottleKind::SignIn, &[], NOW)
                .await
                .unwrap()
                .is_empty()
        );
        // More usernames than one statement binds.
        let many: Vec<String> = (0..1200).map(|i| format!("user{i}")).collect();
        let mut page: Vec<&str> = many.iter().map(String::as_str).collect();
        page.push("alice");
        let locks = s
            .blocked_among(ThrottleKind::SignIn, &page, NOW + 5)
            .await
            .unwrap();
        assert_eq!(locks.keys().collect::<Vec<_>>(), ["alice"], "{}", b.name);

        // Unlocking bob (failures, no lock) lifts nothing and writes nothing.
        assert_eq!(
            s.unlock_user(&bob.id, by, NOW + 5).await.unwrap(),
            Unlocked::default()
        );
        assert!(
            s.failure_run(ThrottleKind::SignIn, "bob")
                .await
                .unwrap()
                .is_some()
        );

        // Unlocking alice lifts the lock on her username, and only hers.
        let unlocked = s.unlock_user(&alice.id, by, NOW + 6).await.unwrap();
        assert_eq!(
            unlocked,
            Unlocked {
                operator_lock: false,
                failed_sign_ins: true
            },
            "{}",
            b.name
        );
        assert!(unlocked.any());
        assert_eq!(
            s.failure_run(ThrottleKind::SignIn, "alice").await.unwrap(),
            None,
            "her run is forgotten: her next failure counts from one"
        );
        assert!(
            s.failure_run(ThrottleKind::SignIn, "nobody")
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            s.failure_run(ThrottleKind::Client, "alice")
                .await
                .unwrap()
                .is_some(),
            "a client id's run is another thing"
        );
        assert!(!s.unlock_user(&alice.id, by, NOW + 7).await.unwrap().any());

        // Both locks at once: one unlock, one event, saying both.
        for i in 0..3 {
            fail("alice", NOW + 10 + i).await;
        }
        s.block(ThrottleKind::SignIn, "alice", NOW + 912)
            .await
            .unwrap();
        assert!(s.lock_user_by(&alice.id, by, NOW + 13).await.unwrap());
        assert_eq!(
            s.unlock_user(&alice.id, by, NOW + 14).await.unwrap(),
            Unlocked {
                operator_lock: true,
                failed_sign_ins: true
            }
        );

        let unlocks: Vec<(Option<String>, Option<String>, Option<String>)> = s
            .events(None, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "user.unlocked")
            .rev()
            .map(|e| (e.actor_user_id, e.subject, e.data))
            .collect();
        assert_eq!(
            unlocks,
            [
                (
                    Some(olivia.id.clone()),
                    Some(alice.id.clone()),
                    Some(r#"{"cleared":["failed_sign_ins"]}"#.to_owned())
                ),
                (
                    Some(olivia.id.clone()),
                    Some(alice.id.clone()),
                    Some(r#"{"cleared":["operator_lock","failed_sign_ins"]}"#.to_owned())
                ),
            ],
            "{}",
            b.name
        );
        b.cleanup().await;
    }
}

#[tokio::test]
async fn organizations_and_memberships_changed_by_an_operator_name_them() {
    use healthgate_core::org::{Organization, OrganizationKind};
    for b in backends().await {
        let s = &b.store;
        let ada = user("ada");
        let olivia = user("olivia");
        s.insert_user(&ada).await.unwrap();
        s.insert_user(&olivia).await.unwrap();
        let by = Actor::user(&olivia.id, None);
        let org = Organization {
            id: new_id("pra"),
            name: "Zeta Practice".into(),
            kind: OrganizationKind::Practice,
            created_at: NOW,
        };
        s.insert_organization_by(&org, by).await.unwrap();
        let empty = organization_named(s, "Alpha Clinic").await;

        s.set_membership_by(&org.id, &ada.id, "staff", by, NOW + 1)
            .await
            .unwrap();
        s.set_membership(&org.id, &olivia.id, "admin", None, NOW + 1)
            .await
            .unwrap();
        let counts: Vec<(String, i64)> = s
            .organizations_with_member_counts()
            .await
            .unwrap()
            .into_iter()
            .map(|(o, n)| (o.name, n))
            .collect();
        assert_eq!(
            counts,
            [
                ("Alpha Clinic".to_owned(), 0),
                ("Zeta Practice".to_owned(), 2)
            ],
            "{}: by name",
            b.name
        );
        assert_eq!(
            s.change_member_role(&org.id, &ada.id, "practitioner", by, NOW + 2)
                .await
                .unwrap()
                .as_deref(),
            Some("staff")
        );
        assert_eq!(
            s.change_member_role(&org.id, &ada.id, "practitioner", by, NOW + 3)
                .await
                .unwrap()
                .as_deref(),
            Some("practitioner"),
            "unchanged"
        );
        assert_eq!(
            s.change_member_role(&empty.id, &ada.id, "staff", by, NOW + 3)
                .await
                .unwrap(),
            None,
            "not a member: nothing changes"
        );
        assert!(s.memberships(&ada.id).await.unwrap().len() == 1);
        assert!(
            s.remove_membership_by(&org.id, &ada.id, by, NOW + 4)
                .await
                .unwrap()
        );
        assert!(
            !s.remove_membership_by(&org.id, &ada.id, by, NOW + 5)
                .await
                .unwrap()
        );
        assert!(s.memberships(&ada.id).await.unwrap().is_empty());

        let trail: Vec<(String, Option<String>, serde_json::Value)> = s
            .events(None, 100)
            .await
            .unwrap()
            .into_iter()
            .rev()
            .filter(|e| {
                e.kind.starts_with("organization.")
                    && e.subject.as_deref() != Some(olivia.id.as_str())
            })
            .filter(|e| e.organization_id.as_deref() == Some(org.id.as_str()))
            .map(|e| (e.kind.clone(), e.actor_user_id.clone(), data_of(&e)))
            .collect();
        let me = Some(olivia.id.clone());
        assert_eq!(
            trail,
            [
                (
                    "organization.created".to_owned(),
                    me.clone(),
                    serde_json::json!({"name": "Zeta Practice", "kind": "practice"})
                ),
                (
                    "organization.member_added".to_owned(),
                    me.clone(),
                    serde_json::json!({"role": "staff"})
                ),
                (
                    "organization.member_role_changed".to_owned(),
                    me.clone(),
                    serde_json::json!({"role": "practitioner", "previous_role": "staff"})
                ),
                (
                    "organization.member_removed".to_owned(),
                    me.clone(),
                    serde_json::json!({"role": "practitioner"})
                ),
            ],
            "{}",
            b.name
        );
        b.cleanup().await;
    }
}

#[tokio::test]
async fn apps_are_listed_with_the_username_of_who_registered_them() {
    for b in backends().await {
        let s = &b.store;
        let dev = user("devon");
        s.insert_user(&dev).await.unwrap();
        let mut mine = client("app-a-mine");
        mine.owner_id = Some(dev.id.clone());
        s.insert_client(&mine).await.unwrap();
        let mut theirs = client("app-b-operators");
        theirs.created_at = NOW + 1;
        s.insert_client(&theirs).await.unwrap();
        let listed: Vec<(String, Option<String>)> = s
            .clients_with_owners()
            .await
            .unwrap()
            .into_iter()
            .map(|(c, owner)| (c.id, owner))
            .collect();
        assert_eq!(
            listed,
            [
                ("app-a-mine".to_owned(), Some("devon".to_owned())),
                ("app-b-operators".to_owned(), None)
            ],
            "{}",
            b.name
        );
        b.cleanup().await;
    }
}

#[tokio::test]
async fn the_audit_log_is_narrowed_by_bound_filters_and_paged_by_seq() {
    use healthgate_core::event::EventKind;
    use healthgate_store::{Event, EventFilter};
    for b in backends().await {
        let s = &b.store;
        let day = 86_400;
        // Kind, actor, subject, app, organization, failed, when.
        type Planned = (
            EventKind,
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
            bool,
            i64,
        );
        let plan: [Planned; 6] = [
            (
                EventKind::LoginSucceeded,
                Some("usr-a"),
                None,
                None,
                None,
                false,
                0,
            ),
            (
                EventKind::LoginFailed,
                None,
                Some("usr-a"),
                None,
                None,
                true,
                0,
            ),
            (
                EventKind::TokenIssued,
                Some("usr-a"),
                None,
                Some("app-x"),
                None,
                false,
                day,
            ),
            (
                EventKind::MemberAdded,
                Some("usr-op"),
                Some("usr-b"),
                None,
                Some("pra-1"),
                false,
                day,
            ),
            (
                EventKind::ApiKeyCreated,
                None,
                Some("key-1"),
                Some("app-x"),
                Some("pra-1"),
                false,
                2 * day,
            ),
            (
                EventKind::LoginFailed,
                None,
                Some("usr-b"),
                None,
                None,
                true,
                3 * day,
            ),
        ];
        for (kind, actor, subject, client_id, org, failed, at) in plan {
            let mut e = Event::new(kind).actor(actor);
            if let Some(v) = subject {
                e = e.subject(v);
            }
            if let Some(v) = client_id {
                e = e.client(v);
            }
            if let Some(v) = org {
                e = e.organization(v);
            }
            if failed {
                e = e.failed();
            }
            s.record_event(NOW + at, &e).await.unwrap();
        }
        let all = s.events(None, 100).await.unwrap();
        let seq = |i: usize| all[all.len() - 1 - i].seq;
        let kept = |f: EventFilter<'static>, limit: i64| async move {
            s.audit_events(&f, limit)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.seq)
                .collect::<Vec<i64>>()
        };
        let none = EventFilter::default();
        assert_eq!(
            kept(none, 100).await,
            [seq(5), seq(4), seq(3), seq(2), seq(1), seq(0)],
            "{}: everything, newest first",
            b.name
        );
        let cases: Vec<(EventFilter<'static>, Vec<i64>)> = vec![
            (
                EventFilter {
                    kind: Some("login.failed"),
                    ..none
                },
                vec![seq(5), seq(1)],
            ),
            (
                EventFilter {
                    person: Some("usr-a"),
                    ..none
                },
                vec![seq(2), seq(1), seq(0)],
            ),
            (
                EventFilter {
                    person: Some("usr-b"),
                    ..none
                },
                vec![seq(5), seq(3)],
            ),
            (
                EventFilter {
                    client_id: Some("app-x"),
                    ..none
                },
                vec![seq(4), seq(2)],
            ),
            (
                EventFilter {
                    organization_id: Some("pra-1"),
                    ..none
                },
                vec![seq(4), seq(3)],
            ),
            (
                EventFilter {
                    outcome: Some("failure"),
                    ..none
                },
                vec![seq(5), seq(1)],
            ),
            (
                EventFilter {
                    from: Some(NOW + day),
                    ..none
                },
                vec![seq(5), seq(4), seq(3), seq(2)],
            ),
            (
                EventFilter {
                    to: Some(NOW + day),
                    ..none
                },
                vec![seq(1), seq(0)],
            ),
            (
                EventFilter {
                    from: Some(NOW + day),
                    to: Some(NOW + 2 * day),
                    ..none
                },
                vec![seq(3), seq(2)],
            ),
            (
                EventFilter {
                    person: Some("usr-a"),
                    kind: Some("login.failed"),
                    ..none
                },
                vec![seq(1)],
            ),
            (
                EventFilter {
                    before: Some(seq(3)),
                    ..none
                },
                vec![seq(2), seq(1), seq(0)],
            ),
            // A value is a value, never SQL.
            (
                EventFilter {
                    person: Some("' OR '1'='1"),
                    ..none
                },
                vec![],
            ),
            (
                EventFilter {
                    kind: Some("login.failed' --"),
                    ..none
                },
                vec![],
            ),
        ];
        for (filter, want) in cases {
            assert_eq!(kept(filter, 100).await, want, "{}: {filter:?}", b.name);
        }
        // Paging: a page, then the next from the last one's seq.
        let first = kept(none, 4).await;
        assert_eq!(first, [seq(5), seq(4), seq(3), seq(2)]);
        let next = kept(
            EventFilter {
                before: Some(seq(2)),
                ..none
            },
            4,
        )
        .await;
        assert_eq!(next, [seq(1), seq(0)]);
        b.cleanup().await;
    }
}

/// A client whose webhook goes to `url`.
async fn hooked_client(store: &Store, url: &str) -> Client {
    let mut c = client(&new_id("app"));
    c.webhook_url = Some(url.to_owned());
    store.insert_client(&c).await.unwrap();
    c
}

/// Queues `n` deliveries to `client` at `at`.
async fn notify(store: &Store, client: &Client, n: usize, at: i64) {
    use healthgate_core::event::EventKind;
    for _ in 0..n {
        let e = healthgate_store::Event::new(EventKind::ApiKeyCreated)
            .client(&client.id)
            .subject("key-1");
        store.record_event(at, &e).await.unwrap();
    }
}

fn answered(status: i64) -> healthgate_store::AttemptResult {
    healthgate_store::AttemptResult {
        status_code: Some(status),
        error: (!(200..300).contains(&status)).then(|| format!("HTTP {status}")),
        duration_ms: 5,
        succeeded: (200..300).contains(&status),
    }
}

#[tokio::test]
async fn webhook_health_counts_each_state_with_the_last_success_and_failure() {
    use healthgate_core::webhook::RETRY_WINDOW;
    for b in backends().await {
        let s = &b.store;
        let c = hooked_client(s, "https://hooks.partner.example/a").await;
        let quiet = hooked_client(s, "https://hooks.partner.example/b").await;
        let _no_hook = named_client(s, "No hook", Default::default()).await;

        notify(s, &c, 2, NOW).await;
        for d in s.claim_deliveries(NOW, 10, 60).await.unwrap() {
            s.record_attempt(&d, NOW + 1, &answered(204)).await.unwrap();
        }
        notify(s, &c, 2, NOW + 10).await;
        for d in s.claim_deliveries(NOW + 10, 10, 60).await.unwrap() {
            s.record_attempt(&d, NOW + 11, &answered(503))
                .await
                .unwrap();
        }
        let late = NOW + 10 + RETRY_WINDOW + 1;
        let due = s.claim_deliveries(late, 10, 60).await.unwrap();
        assert_eq!(due.len(), 2);
        for d in due {
            s.record_attempt(&d, late, &answered(500)).await.unwrap();
        }
        notify(s, &c, 1, late).await;

        let health = s.webhook_health().await.unwrap();
        let ids: Vec<&str> = health.iter().map(|h| h.client_id.as_str()).collect();
        assert_eq!(ids.len(), 2, "{}: only apps with a webhook", b.name);
        assert!(ids.contains(&c.id.as_str()) && ids.contains(&quiet.id.as_str()));
        let h = health.iter().find(|h| h.client_id == c.id).unwrap();
        assert_eq!(
            (
                h.pending,
                h.delivered,
                h.failed,
                h.held,
                h.consecutive_failures
            ),
            (1, 2, 2, 0, 4),
            "{}",
            b.name
        );
        assert_eq!(h.url, "https://hooks.partner.example/a");
        assert_eq!(h.muted_at, None);
        assert_eq!(h.last_success_at, Some(NOW + 1));
        assert_eq!(h.last_failure, Some((late, "HTTP 500".to_owned())));
        let q = health.iter().find(|h| h.client_id == quiet.id).unwrap();
        assert_eq!(
            (
                q.pending,
                q.delivered,
                q.failed,
                q.held,
                q.consecutive_failures
            ),
            (0, 0, 0, 0, 0)
        );
        assert_eq!((q.last_success_at, q.last_failure.clone()), (None, None));

        // Muted after too many failures in a row: the rest is held, and
        // unmuting by an operator resends it and says so in the trail.
        let mut failures = h.consecutive_failures;
        let mut at = late + 100;
        while failures < healthgate_core::webhook::MUTE_AFTER_FAILURES {
            notify(s, &c, 1, at).await;
            for d in s.claim_deliveries(at, 100, 60).await.unwrap() {
                s.record_attempt(&d, at, &answered(500)).await.unwrap();
                failures += 1;
            }
            at += 4000;
        }
        notify(s, &c, 3, at).await;
        let h = s
            .webhook_health()
            .await
            .unwrap()
            .into_iter()
            .find(|h| h.client_id == c.id)
            .unwrap();
        assert!(h.muted_at.is_some(), "{}", b.name);
        assert!(h.held >= 3, "{}: {h:?}", b.name);
        let olivia = user("olivia");
        s.insert_user(&olivia).await.unwrap();
        let resumed = s
            .unmute_webhook_by(&c.id, Actor::user(&olivia.id, None), at)
            .await
            .unwrap();
        assert_eq!(resumed, h.held as u64);
        let after = s
            .webhook_health()
            .await
            .unwrap()
            .into_iter()
            .find(|h| h.client_id == c.id)
            .unwrap();
        assert_eq!(
            (after.held, after.muted_at, after.consecutive_failures),
            (0, None, 0)
        );
        assert_eq!(after.pending, h.pending + h.held);
        let unmuted = events_of_kind(s, "webhook.unmuted").await;
        assert_eq!(unmuted.len(), 1);
        assert_eq!(
            unmuted[0].actor_user_id.as_deref(),
            Some(olivia.id.as_str())
        );
        assert_eq!(
            data_of(&unmuted[0]),
            serde_json::json!({"resumed": resumed})
        );
        // Unmuting what is not muted writes nothing.
        assert_eq!(
            s.unmute_webhook_by(&c.id, Actor::system(), at)
                .await
                .unwrap(),
            0
        );
        assert_eq!(events_of_kind(s, "webhook.unmuted").await.len(), 1);
        b.cleanup().await;
    }
}

#[tokio::test]
async fn failed_attempts_recorded_at_once_that_mute_a_webhook_do_not_deadlock() {
    for b in backends().await {
        let c = hooked_client(&b.store, "https://hooks.partner.example/a").await;
        let many = healthgate_core::webhook::MUTE_AFTER_FAILURES as usize + 20;
        notify(&b.store, &c, many, NOW).await;
        let due = b
            .store
            .claim_deliveries(NOW, many as i64, 60)
            .await
            .unwrap();
        assert_eq!(due.len(), many);
        // Every attempt recorded concurrently, as the worker's batch does:
        // the one that mutes updates every pending delivery of the partner
        // while others hold their own delivery rows.
        let mut handles = Vec::new();
        for d in due {
            let store = b.store.clone();
            handles.push(tokio::spawn(async move {
                store.record_attempt(&d, NOW + 1, &answered(500)).await
            }));
        }
        for h in handles {
            h.await
                .unwrap()
                .unwrap_or_else(|e| panic!("{}: {e}", b.name));
        }
        let h = b
            .store
            .webhook_health()
            .await
            .unwrap()
            .into_iter()
            .find(|h| h.client_id == c.id)
            .unwrap();
        assert!(h.muted_at.is_some(), "{}", b.name);
        assert_eq!(h.consecutive_failures, many as i64, "{}", b.name);
        b.cleanup().await;
    }
}

/// When `user_id`'s password was reset to a temporary one, if it is one.
async fn reset_at(s: &Store, user_id: &str) -> Option<i64> {
    s.user(user_id)
        .await
        .unwrap()
        .and_then(|u| u.password_reset_at)
}

/// The directory review (issue 13, item 6): each move of a listing is
/// decided from the row as stored, written with its event in one
/// transaction, and only an approved app is listed.
#[tokio::test]
async fn a_listing_is_listed_only_once_approved_and_each_move_is_audited() {
    use healthgate_core::client::Reason;
    use healthgate_core::listing::ListingState as S;
    use healthgate_core::review::{Decision, ListingError, fingerprint};
    use healthgate_store::ListingOutcome;
    for b in backends().await {
        let s = &b.store;
        let olivia = user("olivia");
        s.insert_user(&olivia).await.unwrap();
        let op = Actor::user(&olivia.id, Some("192.0.2.7"));
        let mut c = client(&new_id("app"));
        c.connect_redirect_url = Some("https://partner.example/connect?code=".into());
        s.insert_client(&c).await.unwrap();
        let listed = |s: &Store| {
            let s = s.clone();
            async move {
                s.published_clients()
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|c| c.id)
                    .collect::<Vec<_>>()
            }
        };
        let state = |s: &Store, id: String| {
            let s = s.clone();
            async move { s.client(&id).await.unwrap().unwrap().listing }
        };

        // Asked: not listed, waiting for review.
        let moved = s
            .decide_listing(&c.id, Decision::Request, Actor::system(), NOW + 1)
            .await
            .unwrap();
        assert!(
            matches!(&moved, ListingOutcome::Moved(l) if l.state == S::Requested),
            "{}: {moved:?}",
            b.name
        );
        assert_eq!(state(s, c.id.clone()).await.requested_at, Some(NOW + 1));
        assert!(listed(s).await.is_empty(), "{}", b.name);
        assert!(
            s.clients_in_listing(S::Requested)
                .await
                .unwrap()
                .iter()
                .any(|r| r.id == c.id)
        );
        // Asking twice is once.
        assert!(matches!(
            s.decide_listing(&c.id, Decision::Request, Actor::system(), NOW + 2)
                .await
                .unwrap(),
            ListingOutcome::Unchanged(_)
        ));
        assert_eq!(events_of_kind(s, "client.listing_requested").await.len(), 1);

        // Rejected with a reason, which is kept for the developer.
        let why = Reason::parse("The connect page answers 404").unwrap();
        s.decide_listing(&c.id, Decision::Reject { reason: &why }, op, NOW + 3)
            .await
            .unwrap();
        let l = state(s, c.id.clone()).await;
        assert_eq!(
            (
                l.state,
                l.reason.as_deref(),
                l.reviewed_by.as_deref(),
                l.reviewed_at
            ),
            (
                S::Rejected,
                Some("The connect page answers 404"),
                Some(olivia.id.as_str()),
                Some(NOW + 3)
            ),
            "{}",
            b.name
        );
        assert!(listed(s).await.is_empty());
        let rejected = events_of_kind(s, "client.listing_rejected").await;
        assert_eq!(rejected.len(), 1);
        assert_eq!(
            rejected[0].actor_user_id.as_deref(),
            Some(olivia.id.as_str())
        );
        assert_eq!(rejected[0].ip.as_deref(), Some("192.0.2.7"));
        assert_eq!(rejected[0].client_id.as_deref(), Some(c.id.as_str()));
        assert_eq!(
            data_of(&rejected[0]),
            serde_json::json!({"reason": "The connect page answers 404"})
        );
        // A rejected app cannot be approved; nothing is written.
        assert_eq!(
            s.decide_listing(&c.id, Decision::Approve { seen: None }, op, NOW + 4)
                .await
                .unwrap(),
            ListingOutcome::Refused(ListingError::NotRequested(S::Rejected))
        );

        // Asked again, then approved as seen: listed.
        s.decide_listing(&c.id, Decision::Request, Actor::system(), NOW + 5)
            .await
            .unwrap();
        let stored = s.client(&c.id).await.unwrap().unwrap();
        assert_eq!(
            stored.listing.reason, None,
            "{}: a new request starts afresh",
            b.name
        );
        assert_eq!(
            s.decide_listing(
                &c.id,
                Decision::Approve {
                    seen: Some("something else")
                },
                op,
                NOW + 6
            )
            .await
            .unwrap(),
            ListingOutcome::Refused(ListingError::ChangedSinceReview)
        );
        let seen = fingerprint(&stored);
        s.decide_listing(&c.id, Decision::Approve { seen: Some(&seen) }, op, NOW + 6)
            .await
            .unwrap();
        assert_eq!(listed(s).await, vec![c.id.clone()], "{}", b.name);
        let approved = events_of_kind(s, "client.listing_approved").await;
        assert_eq!(approved.len(), 1);
        assert_eq!(
            data_of(&approved[0]),
            serde_json::json!({"name": "Partner", "scope": "profile_read profile_write",
                               "connect_url": "https://partner.example/connect?code="})
        );

        // A change of what practices rely on sends it back, in the update's
        // transaction; other changes do not.
        let mut edited = s.client(&c.id).await.unwrap().unwrap();
        edited.description = Some("Now with reminders".into());
        edited.updated_at = NOW + 7;
        assert!(matches!(
            s.update_client(&edited, None, Actor::system()).await.unwrap(),
            healthgate_store::ClientSaved::Saved(l) if l.state == S::Approved
        ));
        assert_eq!(listed(s).await, vec![c.id.clone()]);
        edited.allowed_scopes = ScopeSet::parse("profile_read profile_write openid").unwrap();
        edited.updated_at = NOW + 8;
        assert!(matches!(
            s.update_client(&edited, Some(true), Actor::system()).await.unwrap(),
            healthgate_store::ClientSaved::Saved(l) if l.state == S::Requested
        ));
        let l = state(s, c.id.clone()).await;
        assert_eq!(
            (l.state, l.requested_at, l.changed.clone()),
            (
                S::Requested,
                Some(NOW + 8),
                vec![healthgate_core::listing::ReviewedField::Scopes]
            ),
            "{}",
            b.name
        );
        assert!(
            listed(s).await.is_empty(),
            "{}: not listed until approved again",
            b.name
        );
        let back = events_of_kind(s, "client.listing_requested").await;
        assert_eq!(back.len(), 3);
        assert_eq!(
            data_of(&back[0]),
            serde_json::json!({"changed": ["scope"]}),
            "newest first"
        );
        let updated = events_of_kind(s, "client.updated").await;
        assert_eq!(
            data_of(&updated[0]),
            serde_json::json!({"listing": "requested"})
        );
        // A change that would leave a request without a connect URL saves nothing.
        let mut cleared = edited.clone();
        cleared.connect_redirect_url = None;
        cleared.name = "Cleared".into();
        assert_eq!(
            s.update_client(&cleared, None, Actor::system())
                .await
                .unwrap(),
            healthgate_store::ClientSaved::ListingRefused(ListingError::NoConnectUrl)
        );
        assert_eq!(s.client(&c.id).await.unwrap().unwrap().name, "Partner");
        assert_eq!(events_of_kind(s, "client.updated").await.len(), 2);

        // Approved again, then unlisted by an operator with a reason.
        s.decide_listing(
            &c.id,
            Decision::Approve { seen: None },
            Actor::system(),
            NOW + 9,
        )
        .await
        .unwrap();
        assert_eq!(
            state(s, c.id.clone()).await.reviewed_by,
            None,
            "the command line is nobody"
        );
        let why = Reason::parse("Practices report failed syncs").unwrap();
        assert_eq!(
            s.decide_listing(&c.id, Decision::Reject { reason: &why }, op, NOW + 10)
                .await
                .unwrap(),
            ListingOutcome::Refused(ListingError::NotRequested(S::Approved))
        );
        s.decide_listing(&c.id, Decision::Unlist { reason: &why }, op, NOW + 10)
            .await
            .unwrap();
        let l = state(s, c.id.clone()).await;
        assert!(l.was_unlisted() && l.reason.as_deref() == Some("Practices report failed syncs"));
        assert!(listed(s).await.is_empty());
        assert_eq!(events_of_kind(s, "client.unlisted").await.len(), 1);
        assert_eq!(
            s.decide_listing(&c.id, Decision::Unlist { reason: &why }, op, NOW + 11)
                .await
                .unwrap(),
            ListingOutcome::Refused(ListingError::NotListed(S::NotListed))
        );
        // Withdrawn by the developer.
        s.decide_listing(
            &c.id,
            Decision::Request,
            Actor::user(&olivia.id, None),
            NOW + 12,
        )
        .await
        .unwrap();
        s.decide_listing(
            &c.id,
            Decision::Withdraw,
            Actor::user(&olivia.id, None),
            NOW + 13,
        )
        .await
        .unwrap();
        assert_eq!(state(s, c.id.clone()).await, Default::default());
        let withdrawn = events_of_kind(s, "client.listing_withdrawn").await;
        assert_eq!(
            data_of(&withdrawn[0]),
            serde_json::json!({"was": "requested"})
        );

        // An unknown app is said to be unknown.
        assert_eq!(
            s.decide_listing("app-none", Decision::Request, op, NOW)
                .await
                .unwrap(),
            ListingOutcome::NoSuchClient
        );
        let mut ghost = client("app-ghost");
        ghost.updated_at = NOW;
        assert_eq!(
            s.update_client(&ghost, None, op).await.unwrap(),
            healthgate_store::ClientSaved::NoSuchClient
        );
        // Registered asking to be listed: both events in one transaction.
        let mut asking = client(&new_id("app"));
        asking.connect_redirect_url = Some("https://partner.example/c".into());
        asking.listing.state = S::Requested;
        asking.listing.requested_at = Some(NOW);
        s.insert_client(&asking).await.unwrap();
        let requested = events_of_kind(s, "client.listing_requested").await;
        assert_eq!(requested[0].client_id.as_deref(), Some(asking.id.as_str()));
        assert_eq!(s.client(&asking.id).await.unwrap().unwrap(), asking);
        b.cleanup().await;
    }
}

/// Two operators deciding at once, or a review racing a change: one move
/// wins, the other is refused, and exactly one event is written.
#[tokio::test]
async fn concurrent_reviews_of_one_request_have_one_outcome() {
    use healthgate_core::client::Reason;
    use healthgate_core::review::Decision;
    use healthgate_store::ListingOutcome;
    for b in backends().await {
        let s = &b.store;
        let mut c = client(&new_id("app"));
        c.connect_redirect_url = Some("https://partner.example/connect?code=".into());
        s.insert_client(&c).await.unwrap();
        s.decide_listing(&c.id, Decision::Request, Actor::system(), NOW)
            .await
            .unwrap();
        let why = Reason::parse("Not for practices").unwrap();
        let (a, r) = tokio::join!(
            s.decide_listing(
                &c.id,
                Decision::Approve { seen: None },
                Actor::system(),
                NOW + 1
            ),
            s.decide_listing(
                &c.id,
                Decision::Reject { reason: &why },
                Actor::system(),
                NOW + 1
            ),
        );
        let outcomes = [a.unwrap(), r.unwrap()];
        let moved = outcomes
            .iter()
            .filter(|o| matches!(o, ListingOutcome::Moved(_)))
            .count();
        assert_eq!(moved, 1, "{}: {outcomes:?}", b.name);
        let events = events_of_kind(s, "client.listing_approved").await.len()
            + events_of_kind(s, "client.listing_rejected").await.len();
        assert_eq!(events, 1, "{}", b.name);
        b.cleanup().await;
    }
}

#[tokio::test]
async fn a_totp_step_and_a_recovery_code_are_each_used_once_on_any_connection() {
    use healthgate_core::mfa::FactorKind;
    use healthgate_store::Factor;
    for b in backends().await {
        let s = &b.store;
        let alice = user("alice");
        let bob = user("bob");
        s.insert_user(&alice).await.unwrap();
        s.insert_user(&bob).await.unwrap();
        let by = Actor::user(&alice.id, None);
        // A pending factor signs nobody in and is replaced by a new start.
        let first = Factor::pending(
            &alice.id,
            FactorKind::Totp,
            "Phone",
            "sealed-1".into(),
            None,
            NOW,
        );
        s.add_pending_factor(&first).await.unwrap();
        let second = Factor::pending(
            &alice.id,
            FactorKind::Totp,
            "Phone",
            "sealed-2".into(),
            None,
            NOW,
        );
        s.add_pending_factor(&second).await.unwrap();
        let all = s.factors_of_user(&alice.id).await.unwrap();
        assert_eq!(all.len(), 1, "{}", b.name);
        assert!(!s.has_second_factor(&alice.id).await.unwrap());
        assert!(
            !s.use_totp_step(&second.id, 10, NOW).await.unwrap(),
            "unconfirmed"
        );
        // Confirming: once, by its owner only, with the first recovery codes.
        let codes: Vec<String> = (0..3).map(|i| format!("digest-{i}")).collect();
        assert!(
            !s.confirm_factor(&bob.id, &second.id, Some(9), Some(&codes), by, NOW)
                .await
                .unwrap()
        );
        assert!(
            s.confirm_factor(&alice.id, &second.id, Some(9), Some(&codes), by, NOW)
                .await
                .unwrap()
        );
        assert!(
            !s.confirm_factor(&alice.id, &second.id, Some(9), None, by, NOW)
                .await
                .unwrap()
        );
        assert!(s.has_second_factor(&alice.id).await.unwrap());
        assert_eq!(
            s.with_second_factor(&[&alice.id, &bob.id]).await.unwrap(),
            std::collections::HashSet::from([alice.id.clone()])
        );
        // The confirming step is used; later steps once each; never back.
        assert!(
            !s.use_totp_step(&second.id, 9, NOW).await.unwrap(),
            "{}",
            b.name
        );
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let (store, id) = (s.clone(), second.id.clone());
                tokio::spawn(async move { store.use_totp_step(&id, 10, NOW).await.unwrap() })
            })
            .collect();
        let mut winners = 0;
        for r in racers {
            winners += usize::from(r.await.unwrap());
        }
        assert_eq!(winners, 1, "{}", b.name);
        assert!(!s.use_totp_step(&second.id, 8, NOW).await.unwrap());
        assert!(s.use_totp_step(&second.id, 11, NOW).await.unwrap());
        // Recovery codes: each once, and only the owner's.
        assert_eq!(s.recovery_codes_left(&alice.id).await.unwrap(), 3);
        assert_eq!(
            s.use_recovery_code(&bob.id, "digest-0", None, NOW)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            s.use_recovery_code(&alice.id, "digest-0", None, NOW)
                .await
                .unwrap(),
            Some(2)
        );
        assert_eq!(
            s.use_recovery_code(&alice.id, "digest-0", None, NOW)
                .await
                .unwrap(),
            None
        );
        s.replace_recovery_codes(&alice.id, &["fresh".to_owned()], by, NOW)
            .await
            .unwrap();
        assert_eq!(
            s.use_recovery_code(&alice.id, "digest-1", None, NOW)
                .await
                .unwrap(),
            None
        );
        assert_eq!(s.recovery_codes_left(&alice.id).await.unwrap(), 1);
        // Removing the last factor takes the codes with it; a reset takes
        // everything and the sessions, with the reason in the event.
        assert!(!s.remove_factor(&bob.id, &second.id, by, NOW).await.unwrap());
        assert!(
            s.remove_factor(&alice.id, &second.id, by, NOW)
                .await
                .unwrap()
        );
        assert_eq!(s.recovery_codes_left(&alice.id).await.unwrap(), 0);
        let third = Factor::pending(
            &alice.id,
            FactorKind::Totp,
            "Tablet",
            "sealed-3".into(),
            None,
            NOW,
        );
        s.add_pending_factor(&third).await.unwrap();
        s.confirm_factor(&alice.id, &third.id, Some(1), Some(&codes), by, NOW)
            .await
            .unwrap();
        s.replace_session(None, &session_of("d1", &alice.id, NOW, NOW + 3600))
            .await
            .unwrap();
        let n = s
            .reset_factors(&alice.id, Some("lost phone"), Actor::system(), NOW)
            .await
            .unwrap();
        assert_eq!(n, 1);
        assert!(s.factors_of_user(&alice.id).await.unwrap().is_empty());
        assert_eq!(s.recovery_codes_left(&alice.id).await.unwrap(), 0);
        assert!(s.sessions_of_user(&alice.id, NOW).await.unwrap().is_empty());
        let reset = events_of_kind(s, "mfa.reset").await;
        assert_eq!(data_of(&reset[0])["reason"], "lost phone");
        b.cleanup().await;
    }
}

#[tokio::test]
async fn a_pending_sign_in_is_finished_once_and_a_ceremony_is_taken_once() {
    for b in backends().await {
        let s = &b.store;
        let alice = user("alice");
        s.insert_user(&alice).await.unwrap();
        let pending = Session {
            pending_user_id: Some(alice.id.clone()),
            ..session("pending", NOW + 300)
        };
        s.replace_session(None, &pending).await.unwrap();
        let read = s.session("pending", NOW).await.unwrap().unwrap();
        assert_eq!(read.pending_user_id.as_deref(), Some(alice.id.as_str()));
        assert_eq!(read.user_id, None, "nobody is signed in yet");
        let mut done = session_of("done", &alice.id, NOW, NOW + 3600);
        done.amr = healthgate_core::mfa::Amr::parse("pwd otp");
        done.mfa_at = Some(NOW);
        assert!(
            !s.complete_second_step("pending", "someone-else", &done)
                .await
                .unwrap()
        );
        assert!(
            s.complete_second_step("pending", &alice.id, &done)
                .await
                .unwrap()
        );
        assert!(
            !s.complete_second_step("pending", &alice.id, &done)
                .await
                .unwrap()
        );
        let signed_in = s.session("done", NOW).await.unwrap().unwrap();
        assert_eq!(signed_in.amr.claim(), ["pwd", "otp"], "{}", b.name);
        assert_eq!(signed_in.mfa_at, Some(NOW));
        // A step-up records the method and when.
        s.step_up_session(
            "done",
            &healthgate_core::mfa::Amr::parse("pwd hwk"),
            NOW + 60,
        )
        .await
        .unwrap();
        let stepped = s.session("done", NOW).await.unwrap().unwrap();
        assert_eq!(
            (stepped.amr.claim(), stepped.mfa_at),
            (vec!["pwd", "hwk"], Some(NOW + 60))
        );
        // A WebAuthn ceremony's state is taken once.
        assert_eq!(s.take_ceremony("done").await.unwrap(), None);
        s.set_ceremony("done", "{\"challenge\":1}").await.unwrap();
        assert_eq!(
            s.take_ceremony("done").await.unwrap().as_deref(),
            Some("{\"challenge\":1}")
        );
        assert_eq!(s.take_ceremony("done").await.unwrap(), None);
        b.cleanup().await;
    }
}

/// A SMART EHR launch is kept by digest with its context, and used once:
/// by the code of the app it was made for, before it expires. A code it
/// could not give is not stored.
#[tokio::test]
async fn an_ehr_launch_gives_one_code_to_its_own_app_in_time() {
    use healthgate_core::smart::{LAUNCH_TTL, Launch, SmartContext};
    for b in backends().await {
        let (client_id, user, _) = setup_code(&b.store).await;
        let other = client(&new_id("app"));
        b.store.insert_client(&other).await.unwrap();
        let launch = Launch {
            client_id: client_id.clone(),
            user_id: Some(user.id.clone()),
            context: SmartContext {
                patient: Some("123".into()),
                fhir_context: vec![serde_json::json!({ "reference": "Appointment/9" })],
                ..SmartContext::for_server("https://fhir.example.com/r4")
            },
            created_by: other.id.clone(),
            created_at: NOW,
            expires_at: NOW + LAUNCH_TTL,
            consumed_at: None,
        };
        let value = mint(SecretKind::SmartLaunch);
        b.store
            .insert_smart_launch(&value.digest, &launch, Actor::system())
            .await
            .unwrap();
        assert_eq!(
            b.store.smart_launch(&value.digest).await.unwrap().as_ref(),
            Some(&launch),
            "{}",
            b.name
        );
        assert!(b.store.smart_launch("nope").await.unwrap().is_none());
        let code_for = |client_id: &str, at: i64| AuthorizationCode {
            family_id: new_id("fam"),
            client_id: client_id.to_owned(),
            user_id: user.id.clone(),
            redirect_uri: "https://partner.example/cb".into(),
            redirect_uri_provided: true,
            scope: ScopeSet::parse("profile_read").unwrap(),
            code_challenge: None,
            created_at: at,
            expires_at: at + 600,
            grant: healthgate_core::token::GrantContext {
                smart: Some(launch.context.clone()),
                ..Default::default()
            },
            nonce: None,
            auth_time: None,
            amr: Default::default(),
            dpop_jkt: None,
        };
        let stored = |code: &healthgate_core::secret::Minted| {
            let store = &b.store;
            let digest = code.digest.clone();
            async move { store.code_for_redemption(&digest).await.unwrap().is_some() }
        };
        // Another app's code, or one made after the launch expired, does
        // not use it.
        let theirs = mint(SecretKind::AuthorizationCode);
        assert!(
            !b.store
                .insert_launched_authorization_code(
                    &theirs.digest,
                    &code_for(&other.id, NOW + 1),
                    &value.digest
                )
                .await
                .unwrap(),
            "{}",
            b.name
        );
        assert!(!stored(&theirs).await);
        let late = mint(SecretKind::AuthorizationCode);
        assert!(
            !b.store
                .insert_launched_authorization_code(
                    &late.digest,
                    &code_for(&client_id, NOW + LAUNCH_TTL),
                    &value.digest
                )
                .await
                .unwrap()
        );
        assert!(!stored(&late).await);
        // Its own app's code, in time: once.
        let first = mint(SecretKind::AuthorizationCode);
        assert!(
            b.store
                .insert_launched_authorization_code(
                    &first.digest,
                    &code_for(&client_id, NOW + 2),
                    &value.digest
                )
                .await
                .unwrap()
        );
        assert!(stored(&first).await);
        let read = b
            .store
            .code_for_redemption(&first.digest)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read.code.grant.smart.as_ref(), Some(&launch.context));
        assert_eq!(
            b.store
                .smart_launch(&value.digest)
                .await
                .unwrap()
                .unwrap()
                .consumed_at,
            Some(NOW + 2)
        );
        let again = mint(SecretKind::AuthorizationCode);
        assert!(
            !b.store
                .insert_launched_authorization_code(
                    &again.digest,
                    &code_for(&client_id, NOW + 3),
                    &value.digest
                )
                .await
                .unwrap()
        );
        assert!(!stored(&again).await);
        b.cleanup().await;
    }
}

/// SMART: a person's linked patients (linked again: renamed), by name, and
/// who they are on the FHIR server; both go with the account.
#[tokio::test]
async fn patient_links_and_fhir_user_belong_to_the_account() {
    use healthgate_core::smart::PatientLink;
    let link = |id: &str, display: &str| PatientLink {
        patient_id: id.into(),
        display: display.into(),
    };
    for b in backends().await {
        let u = user(&new_id("name"));
        b.store.insert_user(&u).await.unwrap();
        let s = &b.store;
        assert!(
            s.link_patient(&u.id, &link("2", "Zed"), Actor::system(), NOW)
                .await
                .unwrap()
        );
        assert!(
            s.link_patient(&u.id, &link("1", "Amy"), Actor::system(), NOW)
                .await
                .unwrap()
        );
        assert!(
            s.link_patient(&u.id, &link("2", "Bea"), Actor::system(), NOW)
                .await
                .unwrap()
        );
        assert!(
            !s.link_patient("usr-none", &link("3", "Cy"), Actor::system(), NOW)
                .await
                .unwrap()
        );
        assert_eq!(
            s.patient_links(&u.id).await.unwrap(),
            vec![link("1", "Amy"), link("2", "Bea")],
            "{}",
            b.name
        );
        assert!(
            s.unlink_patient(&u.id, "1", Actor::system(), NOW)
                .await
                .unwrap()
        );
        assert!(
            !s.unlink_patient(&u.id, "1", Actor::system(), NOW)
                .await
                .unwrap()
        );
        assert!(
            s.set_fhir_user(&u.id, Some("Practitioner/9"), Actor::system(), NOW)
                .await
                .unwrap()
        );
        assert_eq!(
            s.user(&u.id).await.unwrap().unwrap().fhir_user.as_deref(),
            Some("Practitioner/9")
        );
        assert!(
            s.set_fhir_user(&u.id, None, Actor::system(), NOW)
                .await
                .unwrap()
        );
        assert_eq!(s.user(&u.id).await.unwrap().unwrap().fhir_user, None);
        assert!(s.delete_user(&u.id, None, NOW).await.unwrap());
        assert!(s.patient_links(&u.id).await.unwrap().is_empty());
        b.cleanup().await;
    }
}

/// RFC 9449 §11.1: a DPoP proof's `jti` is accepted once per key, by any
/// node (both nodes of a backend share its database), and forgotten once
/// the proof is too old to be accepted anyway.
#[tokio::test]
async fn a_dpop_proof_jti_is_accepted_once_per_key_until_it_expires() {
    for b in backends().await {
        let s = &b.store;
        assert!(
            s.use_dpop_proof("jkt-a", "j-1", NOW + 360).await.unwrap(),
            "{}",
            b.name
        );
        assert!(
            !s.use_dpop_proof("jkt-a", "j-1", NOW + 360).await.unwrap(),
            "{}: a replay",
            b.name
        );
        assert!(
            s.use_dpop_proof("jkt-b", "j-1", NOW + 360).await.unwrap(),
            "{}: another key's",
            b.name
        );
        // Twenty nodes racing with one proof: one wins.
        let racers: Vec<_> = (0..20)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move {
                    s.use_dpop_proof("jkt-c", "j-race", NOW + 360)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut won = 0;
        for r in racers {
            won += usize::from(r.await.unwrap());
        }
        assert_eq!(won, 1, "{}", b.name);
        assert_eq!(
            s.purge_expired(NOW + 360, 0, 100, 10)
                .await
                .unwrap()
                .dpop_proofs,
            0,
            "{}",
            b.name
        );
        assert_eq!(
            s.purge_expired(NOW + 361, 0, 100, 10)
                .await
                .unwrap()
                .dpop_proofs,
            3,
            "{}",
            b.name
        );
        assert!(
            s.use_dpop_proof("jkt-a", "j-1", NOW + 720).await.unwrap(),
            "{}: forgotten",
            b.name
        );
    }
}

#[tokio::test]
async fn a_pushed_request_is_taken_once_by_its_client_then_brought_back_for_a_while() {
    for b in backends().await {
        let s = &b.store;
        for id in ["app-par", "app-other"] {
            s.insert_client(&client(id)).await.unwrap();
        }
        let params = "response_type=code&scope=openid";
        s.insert_pushed_request("d-1", "app-par", params, NOW, NOW + 90, false)
            .await
            .unwrap();
        // Not arrived yet: nothing to bring back.
        let arrived = s.arrived_pushed_request("d-1", "app-par", NOW - 1800);
        assert_eq!(arrived.await.unwrap(), None, "{}", b.name);
        // Another client's request_uri is not taken, and stays for its own.
        let other = s.take_pushed_request("d-1", "app-other", NOW + 1).await;
        assert_eq!(other.unwrap(), None, "{}", b.name);
        // Twenty nodes at once: one takes it.
        let racers: Vec<_> = (0..20)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.take_pushed_request("d-1", "app-par", NOW + 1).await })
            })
            .collect();
        let mut taken = Vec::new();
        for r in racers {
            taken.extend(r.await.unwrap().unwrap());
        }
        assert_eq!(taken, vec![params.to_owned()], "{}", b.name);
        let back = s.arrived_pushed_request("d-1", "app-par", NOW - 1800).await;
        assert_eq!(back.unwrap().as_deref(), Some(params), "{}", b.name);
        let too_late = s.arrived_pushed_request("d-1", "app-par", NOW + 2).await;
        assert_eq!(too_late.unwrap(), None, "{}", b.name);
        let other = s
            .arrived_pushed_request("d-1", "app-other", NOW - 1800)
            .await;
        assert_eq!(other.unwrap(), None, "{}", b.name);

        // Expired before it arrived: never taken.
        s.insert_pushed_request("d-2", "app-par", params, NOW, NOW + 90, false)
            .await
            .unwrap();
        let late = s.take_pushed_request("d-2", "app-par", NOW + 90).await;
        assert_eq!(late.unwrap(), None, "{}", b.name);
        // Kept as arrived already (a request object at the authorization
        // endpoint): brought back, never taken.
        s.insert_pushed_request("d-3", "app-par", params, NOW, NOW + 90, true)
            .await
            .unwrap();
        let taken = s.take_pushed_request("d-3", "app-par", NOW).await;
        assert_eq!(taken.unwrap(), None, "{}", b.name);
        let back = s.arrived_pushed_request("d-3", "app-par", NOW).await;
        assert_eq!(back.unwrap().as_deref(), Some(params), "{}", b.name);

        // A day after they expired they are gone.
        let purged = s
            .purge_expired(NOW + 90 + 86_400, 0, 100, 10)
            .await
            .unwrap();
        assert_eq!(purged.pushed_requests, 0, "{}", b.name);
        let purged = s
            .purge_expired(NOW + 91 + 86_400, 0, 100, 10)
            .await
            .unwrap();
        assert_eq!(purged.pushed_requests, 3, "{}", b.name);
    }
}

#[tokio::test]
async fn registration_tokens_are_kept_by_digest_and_registration_access_is_replaced_once() {
    use healthgate_store::RegistrationToken;
    for b in backends().await {
        let s = &b.store;
        let dev = user("dev");
        s.insert_user(&dev).await.unwrap();
        let token = RegistrationToken {
            id: "rgt-1".into(),
            digest: "digest-1".into(),
            label: Some("onboarding".into()),
            owner_id: Some(dev.id.clone()),
            created_at: NOW,
            expires_at: Some(NOW + 60),
            revoked_at: None,
        };
        s.insert_registration_token(&token, Actor::system())
            .await
            .unwrap();
        let found = s.registration_token("digest-1").await.unwrap().unwrap();
        assert_eq!(found, token, "{}", b.name);
        assert!(
            found.is_usable(NOW + 59) && !found.is_usable(NOW + 60),
            "{}",
            b.name
        );
        assert_eq!(s.registration_token("digest-2").await.unwrap(), None);
        assert_eq!(s.registration_tokens().await.unwrap(), vec![token.clone()]);
        assert!(
            s.revoke_registration_token("rgt-1", Actor::system(), NOW + 1)
                .await
                .unwrap()
        );
        assert!(
            !s.revoke_registration_token("rgt-1", Actor::system(), NOW + 2)
                .await
                .unwrap()
        );
        let revoked = s.registration_token("digest-1").await.unwrap().unwrap();
        assert!(!revoked.is_usable(NOW + 1), "{}", b.name);

        // An app registered at the endpoint keeps where it came from and its
        // access token's digest; a replacement takes the current one only.
        let mut c = client("app-registered");
        c.registered_with = Some("rgt-1".into());
        c.registration_access_digest = Some("rat-1".into());
        s.insert_client(&c).await.unwrap();
        let read = s.client("app-registered").await.unwrap().unwrap();
        assert_eq!(read.registered_with.as_deref(), Some("rgt-1"));
        assert_eq!(read.registration_access_digest.as_deref(), Some("rat-1"));
        let racers: Vec<_> = (0..10)
            .map(|n| {
                let s = s.clone();
                tokio::spawn(async move {
                    s.replace_registration_access(
                        "app-registered",
                        "rat-1",
                        &format!("rat-2-{n}"),
                        NOW,
                    )
                    .await
                    .unwrap()
                })
            })
            .collect();
        let mut won = 0;
        for r in racers {
            won += usize::from(r.await.unwrap());
        }
        assert_eq!(won, 1, "{}", b.name);
        let events = s.events(None, 100).await.unwrap();
        for kind in [
            "registration_token.created",
            "registration_token.revoked",
            "client.registration_access_rotated",
        ] {
            assert!(events.iter().any(|e| e.kind == kind), "{}: {kind}", b.name);
        }
    }
}
