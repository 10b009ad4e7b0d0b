//! Registered clients (partner apps).

use healthgate_core::client::{Client, ClientKind};
use healthgate_core::redirect::RedirectUri;
use healthgate_core::scope::ScopeSet;
use healthgate_core::user::{join_user_types, parse_user_types};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Result, Store, StoreError, conflict};

const COLUMNS: &str = "id, name, photo_url, redirect_uris, allowed_scopes, user_types, kind, secret_digest, created_at, updated_at";

fn from_row(row: &AnyRow) -> Result<Client> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("client {what}"));
    let uris: String = row.try_get("redirect_uris")?;
    Ok(Client {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        photo_url: row.try_get("photo_url")?,
        redirect_uris: uris
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| RedirectUri::from_stored(l.to_owned()))
            .collect(),
        allowed_scopes: ScopeSet::parse(&row.try_get::<String, _>("allowed_scopes")?)
            .map_err(|_| corrupt("scopes"))?,
        user_types: parse_user_types(&row.try_get::<String, _>("user_types")?)
            .map_err(|_| corrupt("user types"))?,
        kind: row
            .try_get::<String, _>("kind")?
            .parse::<ClientKind>()
            .map_err(|_| corrupt("kind"))?,
        secret_digest: row.try_get("secret_digest")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Store {
    pub async fn insert_client(&self, c: &Client) -> Result<()> {
        let uris: Vec<&str> = c.redirect_uris.iter().map(RedirectUri::as_str).collect();
        sqlx::query(
            "INSERT INTO clients (id, name, photo_url, redirect_uris, allowed_scopes, user_types, kind, secret_digest, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&c.id)
        .bind(&c.name)
        .bind(&c.photo_url)
        .bind(uris.join("\n"))
        .bind(c.allowed_scopes.to_string())
        .bind(join_user_types(&c.user_types))
        .bind(c.kind.as_str())
        .bind(&c.secret_digest)
        .bind(c.created_at)
        .bind(c.updated_at)
        .execute(&self.writer)
        .await
        .map_err(conflict("client"))?;
        Ok(())
    }

    pub async fn client(&self, id: &str) -> Result<Option<Client>> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM clients WHERE id = $1"));
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    pub async fn clients(&self) -> Result<Vec<Client>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM clients ORDER BY created_at, id"
        ));
        let rows = sqlx::query(sql).fetch_all(&self.reader).await?;
        rows.iter().map(from_row).collect()
    }

    /// Replaces the client's secret digest; `false` if there is no such client.
    pub async fn set_client_secret(&self, id: &str, secret_digest: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE clients SET secret_digest = $1, updated_at = $2 WHERE id = $3 AND kind = 'confidential'",
        )
        .bind(secret_digest)
        .bind(now)
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a client and, by cascade, its codes, consents and tokens.
    pub async fn delete_client(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM clients WHERE id = $1")
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
