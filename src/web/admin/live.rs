//! `GET /admin/live`: Server-Sent Events that tell an open dashboard page something
//! changed (a payment, an ack, a play, a cabinet connecting); the page then fetches its
//! own HTML again and swaps its live regions. Without JavaScript nothing breaks: the
//! pages are complete as served.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use futures::StreamExt;

use super::Admin;
use crate::web::AppState;

/// How often the database and broker are looked at.
const TICK: Duration = Duration::from_secs(2);
/// A comment line every so often keeps proxies from closing an idle stream.
const KEEPALIVE_TICKS: u32 = 10;
/// The browser reconnects on its own after this; the session is checked again then.
const LIFETIME: Duration = Duration::from_secs(30 * 60);

async fn fingerprint(state: &AppState) -> String {
    let mut mark = state.store.activity_mark().await.unwrap_or_default();
    if let Some(p) = &state.presence {
        let mut links = p.links().await;
        links.sort_by(|a, b| a.0.cmp(&b.0));
        for (id, link) in links {
            if link.connected {
                mark.push('|');
                mark.push_str(&id);
            }
        }
    }
    mark
}

pub async fn events(state: web::Data<AppState>, _admin: Admin) -> HttpResponse {
    let started = tokio::time::Instant::now();
    let first = fingerprint(&state).await;
    let stream = futures::stream::unfold(
        (state, first, 0u32),
        move |(state, last, ticks)| async move {
            if started.elapsed() >= LIFETIME {
                return None;
            }
            tokio::time::sleep(TICK).await;
            let now = fingerprint(&state).await;
            let chunk = if now != last {
                "event: change\ndata: {}\n\n"
            } else if ticks % KEEPALIVE_TICKS == 0 {
                ": keep-alive\n\n"
            } else {
                ""
            };
            Some((chunk, (state, now, ticks + 1)))
        },
    )
    .filter(|c| futures::future::ready(!c.is_empty()))
    .map(|c| Ok::<_, actix_web::Error>(web::Bytes::from_static(c.as_bytes())));
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Accel-Buffering", "no"))
        // Not gzipped: a compressor would hold events back until its buffer fills.
        .insert_header((header::CONTENT_ENCODING, "identity"))
        .streaming(
            futures::stream::once(async {
                Ok::<_, actix_web::Error>(web::Bytes::from_static(b"retry: 3000\n\n"))
            })
            .chain(stream),
        )
}
