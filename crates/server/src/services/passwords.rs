//! User passwords: argon2id (RFC 9106 parameters as the argon2 crate's
//! defaults: 19 MiB, 2 passes), always on a blocking thread so a login never
//! stalls the async runtime. Unknown users are checked against a dummy hash so
//! a failure takes the same time whether or not the username exists.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed")]
pub struct HashError;

fn hash_blocking(password: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    healthgate_core::secret::random_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|_| HashError)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| HashError)
}

fn verify_blocking(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_blocking("healthgate-dummy-password").unwrap_or_default())
}

/// Hashes a new password.
pub async fn hash(password: String) -> Result<String, HashError> {
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(|_| HashError)?
}

/// Checks `password` against `stored`; with no stored hash (unknown user, or
/// an account without a password) it still spends the time of a check and
/// fails.
pub async fn verify(stored: Option<String>, password: String) -> bool {
    tokio::task::spawn_blocking(move || match stored {
        Some(h) => verify_blocking(&h, &password),
        None => {
            let _ = verify_blocking(dummy_hash(), &password);
            false
        }
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let h = hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify(Some(h.clone()), "correct horse".into()).await);
        assert!(!verify(Some(h), "wrong horse".into()).await);
        assert!(!verify(None, "anything".into()).await);
    }
}
