//! The operator console: plain HTML, CSS and JavaScript modules compiled into the
//! binary and served with a strict Content-Security-Policy (no inline script or style,
//! nothing from elsewhere). The page keeps its bearer token in the tab's session
//! storage and sends it with every API call; there are no cookies, so no CSRF.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use doppel_proto::v1 as pb;
use doppel_runtime::TwinType;
use doppel_runtime::ValueKind;

/// The console's policy: its own scripts, styles and API, nothing else.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's files: name, media type, contents.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../console/index.html"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../console/console.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/api.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/dom.js"),
    ),
    (
        "overview.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/overview.js"),
    ),
    (
        "unit.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/unit.js"),
    ),
    (
        "twin.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/twin.js"),
    ),
    (
        "alarms.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/alarms.js"),
    ),
    (
        "diagnostic.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/diagnostic.js"),
    ),
    (
        "cluster.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/cluster.js"),
    ),
    (
        "models.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/models.js"),
    ),
    (
        "annotate.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/annotate.js"),
    ),
];

/// `/` and `/console/{file}`.
pub(crate) fn router() -> Router {
    Router::new()
        .route("/", get(|| async { file("index.html") }))
        .route(
            "/console/{file}",
            get(|Path(name): Path<String>| async move { file(&name) }),
        )
}

fn file(name: &str) -> Response {
    let Some((_, media, body)) = FILES.iter().find(|(file, _, _)| *file == name) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let mut response = (*body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn kind_name(kind: ValueKind) -> &'static str {
    match kind {
        ValueKind::Float => "float",
        ValueKind::Int => "int",
        ValueKind::Bool => "bool",
    }
}

/// What the console needs of a twin type: channels, desired values, commands.
pub(crate) fn type_info(twin_type: &TwinType) -> pb::TwinTypeInfo {
    pb::TwinTypeInfo {
        name: twin_type.name.clone(),
        description: twin_type.description.clone(),
        channels: twin_type
            .channels
            .iter()
            .map(|channel| pb::ChannelInfo {
                name: channel.name.clone(),
                unit: channel.unit.clone(),
                min: channel.range.0,
                max: channel.range.1,
            })
            .collect(),
        desired: twin_type
            .desired
            .iter()
            .map(|desired| pb::DesiredInfo {
                name: desired.name.clone(),
                r#type: kind_name(desired.kind).to_string(),
                unit: desired.unit.clone(),
                min: desired.range.map(|range| range.0),
                max: desired.range.map(|range| range.1),
            })
            .collect(),
        commands: twin_type
            .commands
            .values()
            .map(|command| pb::CommandInfo {
                name: command.name.clone(),
                params: command
                    .params
                    .iter()
                    .map(|param| pb::ParamInfo {
                        name: param.name.clone(),
                        r#type: kind_name(param.kind).to_string(),
                        min: param.range.map(|range| range.0),
                        max: param.range.map(|range| range.1),
                        unit: param.unit.clone(),
                    })
                    .collect(),
                sets: command.sets.iter().map(|(name, _)| name.clone()).collect(),
                clears_trips: command.clears_trips,
            })
            .collect(),
    }
}
