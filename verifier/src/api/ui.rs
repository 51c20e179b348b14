//! The web page: VMs with their tier and score, a score-over-time chart, the pages that changed
//! in the latest snapshot, and the open alerts. Static files compiled into the binary; the page
//! reads the same JSON API with the browser's client certificate (admin or viewer).

use crate::api::auth::reader;
use crate::api::error::ApiError;
use actix_web::{HttpRequest, HttpResponse};

const INDEX: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");
const FAVICON: &str = include_str!("ui/favicon.svg");

/// Same-origin scripts, styles and requests only; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn file(
    req: &HttpRequest,
    content_type: &str,
    body: &'static str,
) -> Result<HttpResponse, ApiError> {
    reader(req)?;
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("content-security-policy", CSP))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header(("referrer-policy", "no-referrer"))
        .insert_header(("cache-control", "no-cache"))
        .body(body))
}

/// `GET /ui` (admin or viewer): the web page.
#[utoipa::path(get, path = "/ui", tag = "ui",
    responses((status = 200, description = "The web page", content_type = "text/html")))]
pub(crate) async fn index(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    file(&req, "text/html; charset=utf-8", INDEX)
}

/// `GET /ui/app.js` (admin or viewer).
#[utoipa::path(get, path = "/ui/app.js", tag = "ui",
    responses((status = 200, description = "The page's script", content_type = "text/javascript")))]
pub(crate) async fn script(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    file(&req, "text/javascript; charset=utf-8", APP_JS)
}

/// `GET /ui/app.css` (admin or viewer).
#[utoipa::path(get, path = "/ui/app.css", tag = "ui",
    responses((status = 200, description = "The page's style sheet", content_type = "text/css")))]
pub(crate) async fn style(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    file(&req, "text/css; charset=utf-8", APP_CSS)
}

/// `GET /ui/favicon.svg` (admin or viewer).
#[utoipa::path(get, path = "/ui/favicon.svg", tag = "ui",
    responses((status = 200, description = "The page's icon", content_type = "image/svg+xml")))]
pub(crate) async fn icon(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    file(&req, "image/svg+xml", FAVICON)
}

/// `GET /` (admin or viewer): to the web page.
#[utoipa::path(get, path = "/", tag = "ui", responses((status = 302, description = "To /ui")))]
pub(crate) async fn root(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    reader(&req)?;
    Ok(HttpResponse::Found()
        .insert_header(("location", "/ui"))
        .finish())
}
