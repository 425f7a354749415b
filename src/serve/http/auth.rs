//! HTTP basic authentication against the users file.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::json::json_response;
use crate::serve::security::users::Users;

/// Lets a request through with the credentials of a user in the users file;
/// `/healthz` stays open for load balancers (it tells nothing but "up").
pub(super) async fn basic_auth(
    State(users): State<Arc<Users>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if matches!(request.uri().path(), "/healthz" | "/healthcheck") {
        return next.run(request).await;
    }
    let credentials = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(basic_credentials);
    if let Some((user, password)) = credentials {
        // PBKDF2 takes milliseconds on purpose: off the async workers.
        let ok = tokio::task::spawn_blocking(move || users.check_password(&user, &password))
            .await
            .unwrap_or(false);
        if ok {
            return next.run(request).await;
        }
    }
    let mut response = json_response(
        StatusCode::UNAUTHORIZED,
        json!({
            "@type": "generic_error",
            "error_code": 40100,
            "message": "authentication required: HTTP basic auth with a user of the server's users file",
        }),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"sluice\", charset=\"UTF-8\""),
    );
    response
}

/// `user` and `password` of an `Authorization: Basic …` header.
pub(super) fn basic_credentials(header: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}
