//! Errors as HTTP responses: typed 4xx answers with a clear message, and an opaque 500
//! whose cause goes to the log, not to the caller.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::cabinets::CabinetError;
use crate::store::StoreError;
use crate::writer::WriteError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
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
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    BadGateway(String),
    #[error("internal error")]
    Internal(String),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(cause) = self {
            tracing::error!(error = %cause, "request failed");
        }
        let mut res = HttpResponse::build(self.status_code());
        if matches!(self, Self::Unauthorized(_)) {
            res.insert_header(("WWW-Authenticate", "Bearer"));
        }
        res.json(serde_json::json!({ "error": self.to_string() }))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Self::Conflict(m),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<CabinetError> for ApiError {
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
    let api = match &err {
        J::Deserialize(e) if e.is_data() => {
            ApiError::Unprocessable(format!("invalid request: {e}"))
        }
        J::Deserialize(e) => ApiError::BadRequest(format!("malformed JSON: {e}")),
        J::ContentType => ApiError::BadRequest("expected Content-Type: application/json".into()),
        J::OverflowKnownLength { .. } | J::Overflow { .. } => {
            ApiError::BadRequest("request body too large".into())
        }
        other => ApiError::BadRequest(other.to_string()),
    };
    api.into()
}

pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid query: {err}")).into()
}
