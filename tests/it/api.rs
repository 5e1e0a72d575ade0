//! The JSON API: authentication, validation, cabinets, operator credits, status.

use coinpulse::domain::PulseSource;
use reqwest::Method;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn api_requires_the_bearer_token() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let url = format!("{}/api/v1/cabinets", app.base);
    let none = app.http.get(&url).send().await.unwrap();
    assert_eq!(none.status().as_u16(), 401);
    let body: serde_json::Value = none.json().await.unwrap();
    assert!(body["error"].is_string());
    let wrong = app
        .http
        .get(&url)
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let right = app
        .http
        .get(&url)
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status().as_u16(), 200);
}

#[tokio::test]
async fn cabinets_are_created_validated_and_updated() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let id = unique("cab");
    let (status, body) = app
        .api(Method::POST, "/cabinets", Some(json!({"machine_id": id, "name": "Galaga", "location": "Back wall", "price_minor": 150, "currency": "USD"})))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["cabinet"]["currency"], "usd");
    assert_eq!(body["mqtt"]["username"], id.as_str());
    assert!(body["mqtt"]["secret"].as_str().unwrap().len() >= 32);
    assert!(
        body["cabinet"].get("secret_hash").is_none(),
        "no secret material in listings"
    );

    let (dup, _) = app
        .api(
            Method::POST,
            "/cabinets",
            Some(json!({"machine_id": id, "price_minor": 100, "currency": "usd"})),
        )
        .await;
    assert_eq!(dup, 409);
    for bad in [
        json!({"machine_id": "bad id!", "price_minor": 100, "currency": "usd"}),
        json!({"machine_id": unique("c"), "price_minor": 0, "currency": "usd"}),
        json!({"machine_id": unique("c"), "price_minor": 100, "currency": "dollars"}),
        json!({"machine_id": unique("c"), "price_minor": "one", "currency": "usd"}),
    ] {
        let (status, body) = app.api(Method::POST, "/cabinets", Some(bad.clone())).await;
        assert_eq!(status, 422, "{bad} → {body}");
        assert!(body["error"].is_string());
    }
    let res = app
        .http
        .post(format!("{}/api/v1/cabinets", app.base))
        .bearer_auth(API_TOKEN)
        .header("Content-Type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);

    let (status, body) = app
        .api(
            Method::PATCH,
            &format!("/cabinets/{id}"),
            Some(json!({"price_minor": 200, "name": "Galaga '88"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["price_minor"], 200);
    assert_eq!(body["location"], "Back wall", "untouched fields stay");
    let (missing, _) = app
        .api(
            Method::PATCH,
            "/cabinets/nope",
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(missing, 404);
    let (missing, _) = app.api(Method::GET, "/cabinets/nope", None).await;
    assert_eq!(missing, 404);
    let list = app.get("/cabinets").await;
    assert!(list["cabinets"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["machine_id"] == id.as_str()));
}

#[tokio::test]
async fn operator_credits_travel_as_a_signed_pulse() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let mut cab = app.cabinet(100, "usd").await;
    let (status, body) = app
        .api(
            Method::POST,
            &format!("/cabinets/{}/credits", cab.machine_id),
            Some(json!({"credits": 2, "reason": "coin jam refund"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let pulse = cab.expect_credit().await;
    assert_eq!(pulse.credits, 2);
    assert_eq!(pulse.source, PulseSource::Operator);
    assert_eq!(pulse.id, body["pulse_id"].as_str().unwrap());
    let stored = app.pulses(&cab.machine_id).await;
    assert_eq!(stored[0]["reason"], "coin jam refund");

    let (zero, _) = app
        .api(
            Method::POST,
            &format!("/cabinets/{}/credits", cab.machine_id),
            Some(json!({"credits": 0, "reason": "x"})),
        )
        .await;
    assert_eq!(zero, 422);
    let (no_reason, _) = app
        .api(
            Method::POST,
            &format!("/cabinets/{}/credits", cab.machine_id),
            Some(json!({"credits": 1, "reason": " "})),
        )
        .await;
    assert_eq!(no_reason, 422);
    let (unknown, _) = app
        .api(
            Method::POST,
            "/cabinets/nobody/credits",
            Some(json!({"credits": 1, "reason": "x"})),
        )
        .await;
    assert_eq!(unknown, 404);
}

#[tokio::test]
async fn status_reports_seed_fields_database_and_mqtt() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let s = app.status().await;
    assert_eq!(s["status"], "up");
    assert_eq!(s["message"], "API is running");
    assert_eq!(s["database"], "ok");
    assert_eq!(s["mqtt"], "connected");
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    let home = app.http.get(&app.base).send().await.unwrap();
    assert_eq!(home.status().as_u16(), 200);
    assert!(home.text().await.unwrap().contains("/webhooks/stripe"));
}
