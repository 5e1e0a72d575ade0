//! Dashboard accounts (`users`), the audit log, failed sign-ins (`login_failures`) and a
//! few installation-wide facts (`meta`). All of it lives in the database, so a second
//! replica sees the same sessions' users, throttles and setup token.

use serde::Serialize;

use super::{Store, StoreError};
use crate::domain::{now_db, Role};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct User {
    pub id: String,
    pub email: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    #[serde(skip)]
    pub password_hash: String,
    pub session_epoch: i64,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: String,
    pub at: String,
    pub actor: String,
    pub ip: Option<String>,
    pub action: String,
    pub subject: Option<String>,
    pub detail: String,
}

/// One action for the audit log.
#[derive(Debug, Clone)]
pub struct NewAudit<'a> {
    /// The user's email, or `cli` / `system`.
    pub actor: &'a str,
    pub ip: Option<&'a str>,
    pub action: &'a str,
    pub subject: Option<&'a str>,
    pub detail: &'a str,
}

/// A throttled key's failures so far.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Failures {
    pub key: String,
    pub failures: i64,
    pub last_failure_at: String,
}

const USER: &str =
    "SELECT id, email, role, password_hash, session_epoch, created_at, updated_at FROM users";

impl Store {
    pub async fn count_users(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        Ok(
            sqlx::query_as(&format!("{USER} ORDER BY created_at, email"))
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        Ok(sqlx::query_as(&format!("{USER} WHERE email = $1"))
            .bind(email)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn user(&self, id: &str) -> Result<Option<User>, StoreError> {
        Ok(sqlx::query_as(&format!("{USER} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Inserts a user; a taken email is a [`StoreError::Conflict`].
    pub async fn insert_user(
        &self,
        email: &str,
        role: Role,
        password_hash: &str,
    ) -> Result<User, StoreError> {
        let now = now_db();
        let id = uuid::Uuid::now_v7().to_string();
        let r = sqlx::query(
            "INSERT INTO users (id, email, role, password_hash, session_epoch, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 0, $5, $5)",
        )
        .bind(&id)
        .bind(email)
        .bind(role.as_str())
        .bind(password_hash)
        .bind(&now)
        .execute(&self.pool)
        .await;
        match r {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict(
                format!("a user with email {email} already exists"),
            )),
            Err(e) => Err(e.into()),
            Ok(_) => Ok(self.user(&id).await?.expect("user just inserted")),
        }
    }

    /// Creates the first owner only while no user exists (the setup page), consuming the
    /// setup token in the same transaction; false when someone got there first.
    pub async fn insert_first_owner(
        &self,
        email: &str,
        password_hash: &str,
        token_hash: &str,
    ) -> Result<Option<User>, StoreError> {
        let mut tx = self.write_transaction().await?;
        let taken = sqlx::query("DELETE FROM meta WHERE name = 'setup_token' AND value = $1")
            .bind(token_hash)
            .execute(&mut *tx)
            .await?;
        let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&mut *tx)
            .await?;
        if taken.rows_affected() != 1 || existing > 0 {
            return Ok(None);
        }
        let now = now_db();
        let id = uuid::Uuid::now_v7().to_string();
        sqlx::query(
            "INSERT INTO users (id, email, role, password_hash, session_epoch, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 0, $5, $5)",
        )
        .bind(&id)
        .bind(email)
        .bind(Role::Owner.as_str())
        .bind(password_hash)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.user(&id).await
    }

    /// Replaces the password hash. With `end_sessions` the session epoch moves on, which
    /// signs the user out everywhere (a rehash at login keeps the sessions).
    pub async fn set_password_hash(
        &self,
        id: &str,
        hash: &str,
        end_sessions: bool,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE users SET password_hash = $2, updated_at = $3, \
             session_epoch = session_epoch + $4 WHERE id = $1",
        )
        .bind(id)
        .bind(hash)
        .bind(now_db())
        .bind(i64::from(end_sessions))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn delete_user(&self, id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn audit(&self, a: &NewAudit<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (id, at, actor, ip, action, subject, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(now_db())
        .bind(a.actor)
        .bind(a.ip)
        .bind(a.action)
        .bind(a.subject)
        .bind(a.detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The newest entries first, `limit` from `offset`.
    pub async fn audit_log(&self, limit: i64, offset: i64) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, at, actor, ip, action, subject, detail FROM audit_log \
             ORDER BY at DESC, id DESC LIMIT $1 OFFSET $2",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn failures(&self, keys: &[&str]) -> Result<Vec<Failures>, StoreError> {
        let mut out = Vec::new();
        for key in keys {
            let row: Option<Failures> = sqlx::query_as(
                "SELECT key, failures, last_failure_at FROM login_failures WHERE key = $1",
            )
            .bind(*key)
            .fetch_optional(&self.pool)
            .await?;
            out.extend(row);
        }
        Ok(out)
    }

    /// Counts a failure; one after a quiet spell (the last before `forget_before`) counts
    /// from one again.
    pub async fn add_failure(&self, key: &str, forget_before: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO login_failures (key, failures, last_failure_at) VALUES ($1, 1, $2) \
             ON CONFLICT (key) DO UPDATE SET failures = CASE \
             WHEN login_failures.last_failure_at < $3 THEN 1 ELSE login_failures.failures + 1 END, \
             last_failure_at = excluded.last_failure_at",
        )
        .bind(key)
        .bind(now_db())
        .bind(forget_before)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn clear_failures(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn meta(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn set_meta(&self, name: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Sets `name` only if it is not set yet (e.g. "first sticker printed at").
    pub async fn set_meta_once(&self, name: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Claims a submitted form's nonce; false when it was claimed before (a double
    /// submit). Nonces older than two days are forgotten.
    pub async fn claim_form_nonce(&self, nonce: &str) -> Result<bool, StoreError> {
        let now = chrono::Utc::now();
        sqlx::query("DELETE FROM form_nonces WHERE used_at < $1")
            .bind(crate::domain::db_time(now - chrono::Duration::days(2)))
            .execute(&self.pool)
            .await?;
        let r = sqlx::query(
            "INSERT INTO form_nonces (nonce, used_at) VALUES ($1, $2) ON CONFLICT (nonce) DO NOTHING",
        )
        .bind(nonce)
        .bind(crate::domain::db_time(now))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Signs a user out everywhere (their sessions carry the old epoch).
    pub async fn end_sessions(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE users SET session_epoch = session_epoch + 1, updated_at = $2 WHERE id = $1",
        )
        .bind(id)
        .bind(now_db())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
