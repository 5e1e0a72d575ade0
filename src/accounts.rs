//! Dashboard accounts: creating users, signing in (with throttling after failures), the
//! first-run setup token, and password changes. Shared by the dashboard and the CLI.

use chrono::{DateTime, Duration, Utc};

use crate::domain::password::{self, PasswordError};
use crate::domain::{now_db, random_token, token_hash, Role};
use crate::store::{NewAudit, Store, StoreError, User};

/// Failures allowed before each further attempt waits.
pub const FREE_FAILURES: i64 = 5;
/// The first wait; it doubles with each further failure, up to [`MAX_LOCKOUT`].
const FIRST_LOCKOUT: Duration = Duration::minutes(1);
const MAX_LOCKOUT: Duration = Duration::hours(1);
/// Failures older than this are forgotten.
const FAILURE_MEMORY: Duration = Duration::hours(24);

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Email(String),
    #[error("password: {0}")]
    Password(#[from] PasswordError),
    #[error("{0}")]
    Conflict(String),
    #[error("no user {0}")]
    NotFound(String),
    #[error("{0}")]
    LastOwner(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for AccountError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Self::Conflict(m),
            other => Self::Store(other),
        }
    }
}

/// argon2id costs ~20 MiB and tens of milliseconds by design: run it on the blocking pool,
/// never on a web worker that is also answering Stripe.
async fn hash_password(password: &str) -> String {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || password::hash(&password))
        .await
        .expect("password hashing does not panic")
}

/// [`password::verify`] on the blocking pool; a missing hash is checked against a dummy
/// one, so an unknown email takes as long as a wrong password.
pub async fn verify_password(password: &str, stored: Option<&str>) -> Option<password::Verified> {
    let (password, stored) = (password.to_owned(), stored.map(str::to_owned));
    tokio::task::spawn_blocking(move || match stored {
        Some(h) => password::verify(&password, &h),
        None => {
            password::dummy_verify(&password);
            None
        }
    })
    .await
    .expect("password checking does not panic")
}

/// Emails are compared in lower case: people type them both ways.
pub fn normalize_email(raw: &str) -> Result<String, AccountError> {
    let e = raw.trim().to_lowercase();
    let bad = |why: &str| Err(AccountError::Email(format!("email: {why}")));
    if e.is_empty() {
        return bad("required");
    }
    if e.len() > 254 || e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("not a valid email address");
    }
    match e.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(e)
        }
        _ => bad("not a valid email address (like owner@example.com)"),
    }
}

/// Adds a user after checking the email and the password policy.
pub async fn create_user(
    store: &Store,
    email: &str,
    role: Role,
    password: &str,
    confirm: &str,
) -> Result<User, AccountError> {
    let email = normalize_email(email)?;
    password::check_new(password, confirm, &email)?;
    let hash = hash_password(password).await;
    Ok(store.insert_user(&email, role, &hash).await?)
}

/// Sets a new password (policy checked) and ends every session of the user.
pub async fn set_password(
    store: &Store,
    user: &User,
    password: &str,
    confirm: &str,
) -> Result<(), AccountError> {
    password::check_new(password, confirm, &user.email)?;
    let hash = hash_password(password).await;
    if !store.set_password_hash(&user.id, &hash, true).await? {
        return Err(AccountError::NotFound(user.email.clone()));
    }
    // A new password is a fresh start: the account's lockout goes too.
    store
        .clear_failures(&format!("account:{}", user.email))
        .await?;
    Ok(())
}

/// Removes a user, refusing to remove the last owner (nobody could manage users then).
pub async fn remove_user(store: &Store, email: &str) -> Result<User, AccountError> {
    let email = normalize_email(email)?;
    let user = store
        .user_by_email(&email)
        .await?
        .ok_or_else(|| AccountError::NotFound(email.clone()))?;
    if user.role == Role::Owner {
        let owners = store
            .users()
            .await?
            .iter()
            .filter(|u| u.role == Role::Owner)
            .count();
        if owners <= 1 {
            return Err(AccountError::LastOwner(format!(
                "{email} is the only owner; add another owner first"
            )));
        }
    }
    store.delete_user(&user.id).await?;
    Ok(user)
}

/// What a sign-in attempt came to.
#[derive(Debug)]
pub enum SignIn {
    Ok(User),
    WrongCredentials,
    /// Too many failures: try again after this long.
    Throttled(std::time::Duration),
}

fn throttle_keys(email: &str, ip: Option<&str>) -> Vec<String> {
    let mut keys = vec![format!("account:{email}")];
    if let Some(ip) = ip {
        keys.push(format!("ip:{ip}"));
    }
    keys
}

/// How long a key with `failures` failures, the last at `last`, must still wait at `now`.
pub fn lockout_remaining(
    failures: i64,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<std::time::Duration> {
    if failures < FREE_FAILURES || now - last > FAILURE_MEMORY {
        return None;
    }
    let doublings = (failures - FREE_FAILURES).min(16) as i32;
    let wait = (FIRST_LOCKOUT * 2i32.pow(doublings as u32)).min(MAX_LOCKOUT);
    (last + wait - now).to_std().ok().filter(|d| !d.is_zero())
}

/// Checks email + password, throttled per account and per address. A correct password
/// made with old hash parameters is rehashed.
pub async fn sign_in(
    store: &Store,
    email: &str,
    password: &str,
    ip: Option<&str>,
) -> Result<SignIn, AccountError> {
    let email = email.trim().to_lowercase();
    let keys = throttle_keys(&email, ip);
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let now = Utc::now();
    let wait = store
        .failures(&key_refs)
        .await?
        .iter()
        .filter_map(|f| {
            let last = DateTime::parse_from_rfc3339(&f.last_failure_at).ok()?;
            lockout_remaining(f.failures, last.to_utc(), now)
        })
        .max();
    if let Some(wait) = wait {
        return Ok(SignIn::Throttled(wait));
    }
    let user = store.user_by_email(&email).await?;
    let verified = verify_password(password, user.as_ref().map(|u| u.password_hash.as_str())).await;
    match (user, verified) {
        (Some(user), Some(v)) => {
            for key in &keys {
                store.clear_failures(key).await?;
            }
            if v.needs_rehash {
                let hash = hash_password(password).await;
                store.set_password_hash(&user.id, &hash, false).await?;
                tracing::info!(user = %user.email, "password rehashed with current parameters");
            }
            Ok(SignIn::Ok(user))
        }
        _ => {
            let forget_before = crate::domain::db_time(now - FAILURE_MEMORY);
            for key in &keys {
                store.add_failure(key, &forget_before).await?;
            }
            Ok(SignIn::WrongCredentials)
        }
    }
}

const SETUP_TOKEN: &str = "setup_token";
const SETUP_TOKEN_EXPIRES: &str = "setup_token_expires";
/// A setup link left lying in a log stops working after this (a restart prints a new one).
const SETUP_TOKEN_LIFETIME: Duration = Duration::hours(24);

/// While no user exists, a fresh one-time setup token (only its hash is stored).
pub async fn issue_setup_token(store: &Store) -> Result<Option<String>, StoreError> {
    if store.count_users().await? > 0 {
        return Ok(None);
    }
    let token = random_token(24);
    let expires = crate::domain::db_time(Utc::now() + SETUP_TOKEN_LIFETIME);
    store.set_meta(SETUP_TOKEN_EXPIRES, &expires).await?;
    store.set_meta(SETUP_TOKEN, &token_hash(&token)).await?;
    Ok(Some(token))
}

/// The setup token is the one issued and no user exists yet.
pub async fn setup_token_valid(store: &Store, token: &str) -> Result<bool, StoreError> {
    if token.is_empty() || store.count_users().await? > 0 {
        return Ok(false);
    }
    let expired = store
        .meta(SETUP_TOKEN_EXPIRES)
        .await?
        .is_none_or(|t| t < crate::domain::now_db());
    if expired {
        return Ok(false);
    }
    let stored = store.meta(SETUP_TOKEN).await?;
    Ok(stored.is_some_and(|h| {
        use subtle::ConstantTimeEq;
        bool::from(h.as_bytes().ct_eq(token_hash(token).as_bytes()))
    }))
}

/// Creates the first owner with the setup token, which is used up in the same step.
pub async fn complete_setup(
    store: &Store,
    token: &str,
    email: &str,
    password: &str,
    confirm: &str,
) -> Result<Option<User>, AccountError> {
    let email = normalize_email(email)?;
    password::check_new(password, confirm, &email)?;
    let hash = hash_password(password).await;
    Ok(store
        .insert_first_owner(&email, &hash, &token_hash(token))
        .await?)
}

/// Writes an audit entry; a failure to write is logged, never fatal to the action.
pub async fn audit(store: &Store, entry: NewAudit<'_>) {
    tracing::info!(actor = entry.actor, action = entry.action, subject = ?entry.subject, detail = entry.detail, "audit");
    if let Err(e) = store.audit(&entry).await {
        tracing::error!(error = %e, action = entry.action, "could not write the audit log");
    }
}

/// When the first sticker sheet was printed, for the setup checklist.
pub async fn mark_sticker_printed(store: &Store) {
    if let Err(e) = store.set_meta_once("first_sticker_at", &now_db()).await {
        tracing::warn!(error = %e, "could not record the first sticker print");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(
            normalize_email("  Owner@Example.COM ").unwrap(),
            "owner@example.com"
        );
        assert!(normalize_email("owner").is_err());
        assert!(normalize_email("@example.com").is_err());
        assert!(normalize_email("a b@example.com").is_err());
        assert!(normalize_email("").is_err());
    }

    #[test]
    fn lockout_doubles_after_five_failures_and_is_forgotten() {
        let t0 = Utc::now();
        assert_eq!(lockout_remaining(4, t0, t0), None);
        let one = lockout_remaining(5, t0, t0).unwrap();
        assert_eq!(one.as_secs(), 60);
        assert_eq!(lockout_remaining(6, t0, t0).unwrap().as_secs(), 120);
        assert_eq!(lockout_remaining(7, t0, t0).unwrap().as_secs(), 240);
        assert_eq!(lockout_remaining(40, t0, t0).unwrap().as_secs(), 3600);
        assert_eq!(lockout_remaining(5, t0, t0 + Duration::seconds(61)), None);
        assert_eq!(lockout_remaining(40, t0, t0 + Duration::hours(25)), None);
    }
}
