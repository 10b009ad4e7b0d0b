//! Organizations (practices and clinics) and their members.

use crate::{Result, Store, conflict};

impl Store {
    pub async fn insert_organization(
        &self,
        id: &str,
        name: &str,
        kind: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO organizations (id, name, kind, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(name)
        .bind(kind)
        .bind(now)
        .execute(&self.writer)
        .await
        .map_err(conflict("organization"))?;
        Ok(())
    }

    /// Adds `user_id` to an organization with `role`, or changes their role.
    pub async fn set_membership(
        &self,
        organization_id: &str,
        user_id: &str,
        role: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO memberships (organization_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (organization_id, user_id) DO UPDATE SET role = excluded.role",
        )
        .bind(organization_id)
        .bind(user_id)
        .bind(role)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// The id of the organization with this exact name, if any.
    pub async fn organization_by_name(&self, name: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM organizations WHERE name = $1 ORDER BY created_at LIMIT 1",
        )
        .bind(name)
        .fetch_optional(&self.reader)
        .await?)
    }
}
