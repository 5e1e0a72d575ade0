//! QR stickers: a cabinet's code as SVG or PNG, and a printable sheet of stickers.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

use super::{Admin, Nav};
use crate::domain::{offered_bundles, Currency, MachineId, Money};
use crate::error::AppError;
use crate::qr::Format;
use crate::web::{html, AppState};

/// `GET /admin/cabinets/{id}/qr.{svg,png}`: the sticker's code, as a download.
pub async fn qr(
    state: web::Data<AppState>,
    _admin: Admin,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let (raw, ext) = path.into_inner();
    let format = match ext.as_str() {
        "svg" => Format::Svg,
        "png" => Format::Png,
        _ => return Err(AppError::NotFound("use qr.svg or qr.png".into())),
    };
    let id =
        MachineId::parse(&raw).map_err(|_| AppError::NotFound(format!("no cabinet {raw:?}")))?;
    if state.store.cabinet(id.as_str()).await?.is_none() {
        return Err(AppError::NotFound(format!("no cabinet {raw:?}")));
    }
    let url = format!("{}/p/{}", state.settings.public_url, id);
    let image = state
        .qr
        .render(url, format)
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!(e)))?;
    crate::accounts::mark_sticker_printed(&state.store).await;
    Ok(HttpResponse::Ok()
        .content_type(format.content_type())
        .insert_header((header::CACHE_CONTROL, "private, max-age=300"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("inline; filename=\"coinpulse-{id}.{ext}\""),
        ))
        .body(image))
}

/// `GET /admin/stickers/printed.svg`: the sheet's print stylesheet loads this image only
/// when the browser prints, which is how the checklist learns a sticker was printed.
pub async fn printed(state: web::Data<AppState>, _admin: Admin) -> HttpResponse {
    crate::accounts::mark_sticker_printed(&state.store).await;
    HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(r#"<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>"#)
}

pub struct Sticker {
    pub machine_id: String,
    pub name: String,
    pub prices: String,
    pub url: String,
    /// The URL without its scheme, as printed under the code.
    pub short_url: String,
}

#[derive(Template)]
#[template(path = "admin/stickers.html")]
struct SheetPage {
    nav: Nav,
    all: Vec<(String, String, bool)>,
    stickers: Vec<Sticker>,
    size: u32,
    paper: String,
    public_url: String,
}

pub const SIZES: [u32; 3] = [50, 70, 100];

/// "1 play $1.00 · 3 plays $2.50": what the pay page offers.
pub fn price_line(bundles: &[crate::domain::Bundle], price: i64, currency: &str) -> String {
    let Ok(cur) = Currency::parse(currency) else {
        return Money::format(price, currency);
    };
    offered_bundles(bundles, price, &cur)
        .iter()
        .map(|b| {
            let plays = if b.credits == 1 {
                "1 play".to_owned()
            } else {
                format!("{} plays", b.credits)
            };
            format!("{plays} {}", Money::format(b.price_minor, currency))
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

/// `GET /admin/stickers?cabinet=a&cabinet=b&size=70&paper=a4`.
pub async fn sheet(
    req: HttpRequest,
    state: web::Data<AppState>,
    admin: Admin,
) -> Result<HttpResponse, AppError> {
    let mut picked: Vec<String> = Vec::new();
    let mut size = 70;
    let mut paper = "a4".to_owned();
    for (k, v) in form_urlencoded::parse(req.query_string().as_bytes()) {
        match k.as_ref() {
            "cabinet" => picked.push(v.into_owned()),
            "size" => size = v.parse().ok().filter(|s| SIZES.contains(s)).unwrap_or(70),
            "paper" if v == "letter" || v == "a4" => paper = v.into_owned(),
            _ => {}
        }
    }
    let cabinets: Vec<_> = state
        .store
        .cabinets()
        .await?
        .into_iter()
        .filter(|c| c.archived_at.is_none())
        .collect();
    let mut stickers = Vec::new();
    for c in cabinets.iter().filter(|c| picked.contains(&c.machine_id)) {
        let bundles = state.store.bundles(&c.machine_id).await?;
        let url = format!("{}/p/{}", state.settings.public_url, c.machine_id);
        stickers.push(Sticker {
            machine_id: c.machine_id.clone(),
            name: c.name.clone(),
            prices: price_line(&bundles, c.price_minor, &c.currency),
            short_url: url.split("://").nth(1).unwrap_or(&url).to_owned(),
            url,
        });
    }
    let page = SheetPage {
        nav: admin.nav("stickers"),
        all: cabinets
            .into_iter()
            .map(|c| {
                let on = picked.contains(&c.machine_id);
                (c.machine_id, c.name, on)
            })
            .collect(),
        stickers,
        size,
        paper,
        public_url: state.settings.public_url.clone(),
    };
    Ok(html::page(StatusCode::OK, &page))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Bundle;

    #[test]
    fn price_line_lists_what_the_pay_page_offers() {
        let b = vec![Bundle {
            credits: 3,
            price_minor: 250,
            label: String::new(),
        }];
        let line = price_line(&b, 100, "usd");
        assert!(line.contains("3 plays"), "{line}");
        assert!(line.contains(" · ") || !line.contains("1 play"), "{line}");
    }
}
