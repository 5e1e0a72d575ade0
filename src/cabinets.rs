//! Owner operations on cabinets, shared by the JSON API and the CLI: validation,
//! registration with a fresh secret, price changes and secret rotation.

use crate::domain::{hash_cabinet_secret, random_token, Currency, MachineId};
use crate::domain::{Cabinet, Keys};
use crate::store::{CabinetPatch, NewCabinet, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CabinetError {
    /// A field failed validation: (field, message).
    #[error("{0}: {1}")]
    Invalid(&'static str, String),
    #[error("no cabinet with machine_id {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for CabinetError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Self::Conflict(m),
            other => Self::Store(other),
        }
    }
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct CabinetInput {
    pub machine_id: String,
    pub name: Option<String>,
    #[serde(default)]
    pub game: String,
    #[serde(default)]
    pub location: String,
    #[serde(alias = "price")]
    pub price_minor: i64,
    pub currency: String,
    pub enabled: Option<bool>,
}

/// A new cabinet and its MQTT secret, which is shown this once.
#[derive(Debug, Clone)]
pub struct Registered {
    pub cabinet: Cabinet,
    pub secret: String,
}

fn text(field: &'static str, value: &str, max: usize) -> Result<String, CabinetError> {
    let v = value.trim();
    if v.chars().count() > max {
        return Err(CabinetError::Invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(CabinetError::Invalid(
            field,
            "must not contain control characters".into(),
        ));
    }
    Ok(v.to_owned())
}

fn price(p: i64) -> Result<i64, CabinetError> {
    if p <= 0 {
        return Err(CabinetError::Invalid(
            "price_minor",
            "must be a positive amount in minor units (cents)".into(),
        ));
    }
    if p > 1_000_000 {
        return Err(CabinetError::Invalid(
            "price_minor",
            "is implausibly large for one credit".into(),
        ));
    }
    Ok(p)
}

/// A price must be chargeable in its currency under Stripe's rules.
fn check_price_in(price_minor: i64, currency: &str) -> Result<(), CabinetError> {
    let c =
        Currency::parse(currency).map_err(|e| CabinetError::Invalid("currency", e.to_string()))?;
    c.check_amount(price_minor)
        .map_err(|e| CabinetError::Invalid("price_minor", e.to_string()))
}

fn currency(c: &str) -> Result<String, CabinetError> {
    Currency::parse(c)
        .map(|c| c.as_str().to_owned())
        .map_err(|e| CabinetError::Invalid("currency", e.to_string()))
}

/// Checks an owner's free-credit request (1–100 credits, a reason of at most 200
/// characters) and returns the trimmed reason.
pub fn check_grant(credits: i64, reason: &str) -> Result<&str, CabinetError> {
    if !(1..=100).contains(&credits) {
        return Err(CabinetError::Invalid(
            "credits",
            "must be between 1 and 100".into(),
        ));
    }
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 200 {
        return Err(CabinetError::Invalid(
            "reason",
            "is required (at most 200 characters)".into(),
        ));
    }
    Ok(reason)
}

pub async fn register(
    store: &Store,
    keys: &Keys,
    input: &CabinetInput,
) -> Result<Registered, CabinetError> {
    let machine_id = MachineId::parse(input.machine_id.trim())
        .map_err(|e| CabinetError::Invalid("machine_id", e.to_string()))?;
    let name = text(
        "name",
        input.name.as_deref().unwrap_or(machine_id.as_str()),
        100,
    )?;
    let salt = random_token(16);
    let secret = keys.cabinet_secret(machine_id.as_str(), &salt);
    let new = NewCabinet {
        machine_id: machine_id.to_string(),
        name: if name.is_empty() {
            machine_id.to_string()
        } else {
            name
        },
        game: text("game", &input.game, 100)?,
        location: text("location", &input.location, 100)?,
        price_minor: price(input.price_minor)?,
        currency: currency(&input.currency)?,
        enabled: input.enabled.unwrap_or(true),
        secret_salt: salt,
        secret_hash: hash_cabinet_secret(&secret),
    };
    check_price_in(new.price_minor, &new.currency)?;
    let cabinet = store.insert_cabinet(&new).await?;
    tracing::info!(machine_id = %cabinet.machine_id, price = cabinet.price_minor, currency = %cabinet.currency, "cabinet registered");
    Ok(Registered { cabinet, secret })
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CabinetUpdate {
    pub name: Option<String>,
    pub game: Option<String>,
    pub location: Option<String>,
    #[serde(alias = "price")]
    pub price_minor: Option<i64>,
    pub currency: Option<String>,
    pub enabled: Option<bool>,
    /// For brokers that report nothing about connections (see docs/broker.md).
    pub always_available: Option<bool>,
}

pub async fn update(
    store: &Store,
    machine_id: &str,
    u: &CabinetUpdate,
) -> Result<Cabinet, CabinetError> {
    let patch = CabinetPatch {
        name: u
            .name
            .as_deref()
            .map(|n| text("name", n, 100))
            .transpose()?,
        game: u
            .game
            .as_deref()
            .map(|g| text("game", g, 100))
            .transpose()?,
        location: u
            .location
            .as_deref()
            .map(|l| text("location", l, 100))
            .transpose()?,
        price_minor: u.price_minor.map(price).transpose()?,
        currency: u.currency.as_deref().map(currency).transpose()?,
        enabled: u.enabled,
        always_available: u.always_available,
    };
    if patch.name.as_deref() == Some("") {
        return Err(CabinetError::Invalid("name", "must not be empty".into()));
    }
    if patch.price_minor.is_some() || patch.currency.is_some() {
        let current = store
            .cabinet(machine_id)
            .await?
            .ok_or_else(|| CabinetError::NotFound(machine_id.to_owned()))?;
        check_price_in(
            patch.price_minor.unwrap_or(current.price_minor),
            patch.currency.as_deref().unwrap_or(&current.currency),
        )?;
    }
    let cabinet = store
        .update_cabinet(machine_id, &patch)
        .await?
        .ok_or_else(|| CabinetError::NotFound(machine_id.to_owned()))?;
    tracing::info!(machine_id, price = cabinet.price_minor, currency = %cabinet.currency, enabled = cabinet.enabled, "cabinet updated");
    Ok(cabinet)
}

/// Issues a new secret; the old one stops working at the cabinet's next login.
pub async fn rotate_secret(
    store: &Store,
    keys: &Keys,
    machine_id: &str,
) -> Result<String, CabinetError> {
    let salt = random_token(16);
    let secret = keys.cabinet_secret(machine_id, &salt);
    // Pulses still waiting are signed again, or a cabinet with its new secret would refuse
    // them as forged.
    let resign = |payload: &str| {
        let msg: crate::domain::PulseMessage = serde_json::from_str(payload).ok()?;
        Some(crate::domain::sign_pulse(
            &msg,
            &secret,
            keys.pulse_signing_key(),
        ))
    };
    if !store
        .set_cabinet_secret(machine_id, &salt, &hash_cabinet_secret(&secret), resign)
        .await?
    {
        return Err(CabinetError::NotFound(machine_id.to_owned()));
    }
    tracing::info!(machine_id, "cabinet secret rotated");
    Ok(secret)
}

/// Validates and stores a cabinet's bundles, in its currency.
pub async fn set_bundles(
    store: &Store,
    cabinet: &Cabinet,
    bundles: &[crate::domain::Bundle],
) -> Result<Vec<crate::domain::Bundle>, CabinetError> {
    let currency = Currency::parse(&cabinet.currency)
        .map_err(|e| CabinetError::Invalid("currency", e.to_string()))?;
    let valid = crate::domain::validate_bundles(bundles, &currency)
        .map_err(|e| CabinetError::Invalid("bundles", e.to_string()))?;
    store.set_bundles(&cabinet.machine_id, &valid).await?;
    tracing::info!(machine_id = %cabinet.machine_id, count = valid.len(), "bundles updated");
    Ok(valid)
}
