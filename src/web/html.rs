//! HTML responses: rendering a template, the headers every page carries, and the one
//! message page used for notices and errors shown to people.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, HttpResponseBuilder};
use askama::Template;

/// A page's HTML; a template that fails to render is logged and replaced by a short
/// apology rather than a half-written page.
pub fn render(t: &impl Template) -> String {
    t.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "template failed");
        "Something went wrong. Please try again.".into()
    })
}

/// Adds the headers every page for people carries.
pub fn page_headers(res: &mut HttpResponseBuilder) -> &mut HttpResponseBuilder {
    res.content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("Referrer-Policy", "same-origin"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
}

pub fn page(status: StatusCode, t: &impl Template) -> HttpResponse {
    page_headers(&mut HttpResponse::build(status)).body(render(t))
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    title: &'a str,
    heading: &'a str,
    body: &'a str,
    retry_url: Option<&'a str>,
}

/// A page with a heading, a sentence and, when given, a "Try again" link.
pub fn message_page(
    mut res: HttpResponseBuilder,
    heading: &str,
    body: &str,
    retry_url: Option<&str>,
) -> HttpResponse {
    let t = MessagePage {
        title: heading,
        heading,
        body,
        retry_url,
    };
    page_headers(&mut res).body(render(&t))
}

/// 303 to `to`: the answer to a form that did what it was asked.
pub fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

/// A notice page with status 200 (e.g. "this machine is unavailable").
pub fn message(heading: &str, body: &str) -> HttpResponse {
    message_page(HttpResponse::Ok(), heading, body, None)
}
