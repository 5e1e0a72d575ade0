//! Stylesheets and scripts, built into the binary. Pages link them by a name carrying a
//! hash of the content (`/static/admin.3f9c1e2ab4.css`), served as immutable for a year; a
//! new release changes the name, so a browser never mixes old CSS with new pages.

use std::collections::HashMap;
use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use sha2::{Digest, Sha256};

struct Asset {
    name: &'static str,
    body: &'static str,
    content_type: &'static str,
}

const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    Asset {
        name: "app.css",
        body: include_str!("../../static/app.css"),
        content_type: CSS,
    },
    Asset {
        name: "pay.css",
        body: include_str!("../../static/pay.css"),
        content_type: CSS,
    },
    Asset {
        name: "admin.css",
        body: include_str!("../../static/admin.css"),
        content_type: CSS,
    },
    Asset {
        name: "thanks.js",
        body: include_str!("../../static/thanks.js"),
        content_type: JS,
    },
    Asset {
        name: "admin.js",
        body: include_str!("../../static/admin.js"),
        content_type: JS,
    },
];

/// `app.css` → `app.<10 hex of sha256>.css`.
fn hashed_name(a: &Asset) -> String {
    let digest = hex::encode(Sha256::digest(a.body.as_bytes()));
    let (stem, ext) = a.name.rsplit_once('.').expect("assets have an extension");
    format!("{stem}.{}.{ext}", &digest[..10])
}

struct Index {
    /// Plain name → `/static/<hashed name>`.
    urls: HashMap<&'static str, String>,
    /// Hashed name → asset.
    by_hashed: HashMap<String, &'static Asset>,
}

static INDEX: LazyLock<Index> = LazyLock::new(|| {
    let mut urls = HashMap::new();
    let mut by_hashed = HashMap::new();
    for a in ASSETS {
        let h = hashed_name(a);
        urls.insert(a.name, format!("/static/{h}"));
        by_hashed.insert(h, a);
    }
    Index { urls, by_hashed }
});

/// The URL to link an asset by (`url("admin.css")`). Panics on a name that is not built
/// in, which the template tests catch.
pub fn url(name: &str) -> &'static str {
    INDEX
        .urls
        .get(name)
        .unwrap_or_else(|| panic!("no built-in asset {name}"))
}

/// `GET /static/{file}`: a hashed name is cached for a year; a plain name (an old link,
/// a bookmark) for five minutes.
pub async fn serve(file: web::Path<String>) -> HttpResponse {
    let file = file.into_inner();
    let (asset, cache) = match INDEX.by_hashed.get(&file) {
        Some(a) => (Some(*a), "public, max-age=31536000, immutable"),
        None => (
            ASSETS.iter().find(|a| a.name == file),
            "public, max-age=300",
        ),
    };
    match asset {
        Some(a) => HttpResponse::Ok()
            .content_type(a.content_type)
            .insert_header((header::CACHE_CONTROL, cache))
            .insert_header(("X-Content-Type-Options", "nosniff"))
            .body(a.body),
        None => HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("not found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_hashed_url_that_changes_with_content() {
        for a in ASSETS {
            let u = url(a.name);
            assert!(u.starts_with("/static/"), "{u}");
            assert!(INDEX.by_hashed.contains_key(&u["/static/".len()..]));
        }
        let other = Asset {
            name: "app.css",
            body: "body{}",
            content_type: CSS,
        };
        assert_ne!(hashed_name(&other), hashed_name(&ASSETS[0]));
    }
}
