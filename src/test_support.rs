//! Unit tests' fixtures: a real SQLite store in a temporary directory with one cabinet.

use crate::domain::hash_cabinet_secret;
use crate::store::{NewCabinet, Store};

/// A store with cabinet `machine_id` (1.00 USD a credit) whose MQTT secret is `secret`,
/// salted with `salt`. Keep the directory alive as long as the store.
pub async fn store_with_cabinet(
    machine_id: &str,
    salt: &str,
    secret: &str,
) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = Store::connect(&url).await.unwrap();
    store
        .insert_cabinet(&NewCabinet {
            machine_id: machine_id.into(),
            name: "Cab".into(),
            game: String::new(),
            location: String::new(),
            price_minor: 100,
            currency: "usd".into(),
            enabled: true,
            secret_salt: salt.into(),
            secret_hash: hash_cabinet_secret(secret),
        })
        .await
        .unwrap();
    (store, dir)
}
