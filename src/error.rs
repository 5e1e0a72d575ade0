//! The web layer's one error type. Typed 4xx answers carry a message for the caller; an
//! `Internal` error keeps its cause chain for the log (written once, here) and tells the
//! caller only that something went wrong.
//!
//! Under `/api`, the webhook paths and `/gameover` an error is JSON (`{"error": …}`);
//! elsewhere it is an HTML page ([`render_html_errors`]). Player pages that want their
//! own heading and a "Try again" link wrap the error in a [`PageError`].

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};

use crate::cabinets::CabinetError;
use crate::store::StoreError;
use crate::writer::WriteError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    BadGateway(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl AppError {
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Self::Internal(e.into())
    }

    /// Shown to a player as a page with this heading and, when given, a "Try again" link.
    pub fn page(self, heading: &'static str, retry_url: Option<String>) -> PageError {
        PageError {
            error: self,
            heading,
            retry_url,
        }
    }

    /// Logs an internal error with its whole cause chain; 4xx answers are the caller's
    /// business and were logged (when worth it) where they were decided.
    fn log(&self) {
        if let Self::Internal(e) = self {
            tracing::error!(error = format!("{e:#}"), "request failed");
        }
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        self.log();
        let mut res = HttpResponse::build(self.status_code());
        add_headers(self, &mut res);
        res.json(serde_json::json!({ "error": self.to_string() }))
    }
}

fn add_headers(e: &AppError, res: &mut actix_web::HttpResponseBuilder) {
    match e {
        AppError::Unauthorized(_) => {
            res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        AppError::TooManyRequests {
            retry_after_secs, ..
        } => {
            res.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
        }
        _ => {}
    }
}

/// An [`AppError`] shown to a player as a page of its own.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct PageError {
    #[source]
    pub error: AppError,
    pub heading: &'static str,
    pub retry_url: Option<String>,
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        self.error.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        self.error.log();
        let body = match &self.error {
            AppError::Internal(_) => {
                "Something went wrong on our side. Please try again.".to_owned()
            }
            other => other.to_string(),
        };
        let mut res = HttpResponse::build(self.status_code());
        add_headers(&self.error, &mut res);
        crate::web::html::message_page(res, self.heading, &body, self.retry_url.as_deref())
    }
}

/// Paths whose callers are programs: errors there are JSON.
fn wants_json(path: &str) -> bool {
    path.starts_with("/api/")
        || path.starts_with("/webhooks/")
        || path.starts_with("/mqtt/")
        || matches!(path, "/addCredit" | "/gameover" | "/create-payment-link" | "/status")
        // The thanks page's poll.
        || (path.starts_with("/p/") && path.ends_with("/status"))
}

/// Middleware: an [`AppError`] answered on a page for people becomes an HTML page.
pub async fn render_html_errors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let json = wants_json(req.path());
    let res = next.call(req).await?.map_into_boxed_body();
    if json {
        return Ok(res);
    }
    let Some(e) = res
        .response()
        .error()
        .and_then(|e| e.as_error::<AppError>())
    else {
        return Ok(res);
    };
    let heading = e
        .status_code()
        .canonical_reason()
        .unwrap_or("Something went wrong");
    let body = match e {
        AppError::Internal(_) => "Something went wrong on our side. Please try again.".to_owned(),
        other => other.to_string(),
    };
    let mut builder = HttpResponse::build(e.status_code());
    add_headers(e, &mut builder);
    let page = crate::web::html::message_page(builder, heading, &body, None);
    Ok(res.into_response(page))
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Self::Conflict(m),
            other => Self::internal(other),
        }
    }
}

impl From<WriteError> for AppError {
    fn from(e: WriteError) -> Self {
        Self::internal(e)
    }
}

impl From<CabinetError> for AppError {
    fn from(e: CabinetError) -> Self {
        match e {
            CabinetError::Invalid(..) => Self::Unprocessable(e.to_string()),
            CabinetError::NotFound(_) => Self::NotFound(e.to_string()),
            CabinetError::Conflict(m) => Self::Conflict(m),
            CabinetError::Store(s) => s.into(),
        }
    }
}

/// JSON bodies that are not JSON are 400; JSON of the wrong shape is 422.
pub fn json_error(
    err: actix_web::error::JsonPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as J;
    let e = match &err {
        J::Deserialize(e) if e.is_data() => {
            AppError::Unprocessable(format!("invalid request: {e}"))
        }
        J::Deserialize(e) => AppError::BadRequest(format!("malformed JSON: {e}")),
        J::ContentType => AppError::BadRequest("expected Content-Type: application/json".into()),
        J::OverflowKnownLength { .. } | J::Overflow { .. } => {
            AppError::BadRequest("request body too large".into())
        }
        other => AppError::BadRequest(other.to_string()),
    };
    e.into()
}

pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    AppError::BadRequest(format!("invalid query: {err}")).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_keep_their_cause_but_do_not_show_it() {
        let cause = std::io::Error::other("disk on fire");
        let e = AppError::internal(anyhow::Error::new(cause).context("saving a play"));
        assert_eq!(e.to_string(), "internal error");
        let source = std::error::Error::source(&e).expect("the cause is kept");
        assert_eq!(source.to_string(), "saving a play");
        assert_eq!(source.source().unwrap().to_string(), "disk on fire");
        assert_eq!(e.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn programs_get_json_and_people_get_pages() {
        assert!(wants_json("/api/v1/cabinets"));
        assert!(wants_json("/webhooks/stripe"));
        assert!(wants_json("/addCredit"));
        assert!(wants_json("/p/cab-1/status"));
        assert!(!wants_json("/p/cab-1"));
        assert!(!wants_json("/"));
    }
}
