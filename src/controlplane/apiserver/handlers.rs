//! Routing and the generic resource handlers (get, list, create, update, patch, delete, binding).
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tracing::debug;

use super::auth::User;
use super::object::{self, DeleteDecision, DeleteOptions};
use super::patch::{self, PatchType};
use super::resources::{self, ResourceDef, Sub};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::{success_status, ApiError};
use super::table::{self, IncludeObject};
use super::watch::ListRv;
use super::{discovery, pods, proxy, watch, State};
use crate::controlplane::store::{Action, Store, StoreError};
use crate::controlplane::auth::server as authz;
use crate::streamproxy::Body;

/// Largest request body accepted (kube's limit is 3 MiB).
pub(crate) const MAX_BODY: usize = 3 * 1024 * 1024;

/// Concurrent requests admitted (kube-apiserver's `--max-requests-inflight` and
/// `--max-mutating-requests-inflight`); long-running requests (watch, exec, attach,
/// port-forward, log) are not counted. Past the cap: 429 with Retry-After.
pub(crate) struct Inflight {
    readonly: Arc<tokio::sync::Semaphore>,
    mutating: Arc<tokio::sync::Semaphore>,
}

/// kube-apiserver's defaults.
pub(crate) const MAX_REQUESTS_INFLIGHT: usize = 400;
pub(crate) const MAX_MUTATING_REQUESTS_INFLIGHT: usize = 200;

impl Default for Inflight {
    fn default() -> Self {
        Inflight::new(MAX_REQUESTS_INFLIGHT, MAX_MUTATING_REQUESTS_INFLIGHT)
    }
}

impl Inflight {
    pub fn new(readonly: usize, mutating: usize) -> Inflight {
        Inflight {
            readonly: Arc::new(tokio::sync::Semaphore::new(readonly)),
            mutating: Arc::new(tokio::sync::Semaphore::new(mutating)),
        }
    }
    /// A permit for a request, None when the cap is reached.
    pub fn admit(&self, method: &Method) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let sem = match *method {
            Method::GET | Method::HEAD | Method::OPTIONS => &self.readonly,
            _ => &self.mutating,
        };
        sem.clone().try_acquire_owned().ok()
    }
}

/// kube's long-running request check: watches and the streaming pod subresources.
pub(crate) fn is_long_running(r: &Route, query: Option<&str>) -> bool {
    match r {
        Route::Resource(t) => {
            matches!(
                t.sub,
                Some(Sub::Exec | Sub::Attach | Sub::PortForward | Sub::Log)
            ) || (t.name.is_none() && Query::parse(query).flag("watch"))
        }
        _ => false,
    }
}

/// The 429 past the inflight cap.
fn too_many_requests() -> Response<Body> {
    let mut e = ApiError::new(
        429,
        "TooManyRequests",
        "Too many requests, please try again later.",
    );
    e.details = Some(json!({"retryAfterSeconds": 1}));
    let mut resp = error_response(&e);
    resp.headers_mut()
        .insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    resp
}

/// `/healthz`, `/livez`, `/readyz` (and `/<endpoint>/<check>`), as kube-apiserver: `ok`, or with
/// `?verbose` (or on failure) one `[+]name ok` / `[-]name failed: reason withheld` line per check;
/// 500 when a check fails. The `etcd` check is a real store probe (a read transaction and the
/// writer lock); readyz also fails while shutting down.
async fn health(state: &Arc<State>, path: &str, query: Option<&str>) -> Response<Body> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let endpoint = segs[0];
    let q = Query::parse(query);
    let mut checks = vec!["ping", "log", "etcd"];
    if endpoint == "readyz" {
        checks.extend(["etcd-readiness", "shutdown"]);
    }
    let store = state.store.clone();
    let probe = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        blocking(move || store.probe(std::time::Duration::from_secs(2))),
    )
    .await;
    let etcd_ok = match probe {
        Ok(Ok(Ok(_))) => true,
        other => {
            tracing::warn!(result = ?other.map(|r| r.map(|x| x.map(|_| ()))), "store health probe failed");
            false
        }
    };
    let ok = |c: &str| match c {
        "etcd" | "etcd-readiness" => etcd_ok,
        "shutdown" => !state.shutdown.is_cancelled(),
        _ => true,
    };
    let text = |code: u16, body: String| {
        Response::builder()
            .status(code)
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header("x-content-type-options", "nosniff")
            .body(full(body))
            .expect("valid")
    };
    if let Some(one) = segs.get(1) {
        if !checks.contains(one) {
            return text(404, "404 page not found\n".into());
        }
        return if ok(one) {
            text(200, "ok".into())
        } else {
            text(500, "internal server error: check failed\n".into())
        };
    }
    let excluded: Vec<&str> = q.all("exclude").collect();
    let mut lines = String::new();
    let mut failed = false;
    for c in checks.iter().filter(|c| !excluded.contains(c)) {
        if ok(c) {
            lines.push_str(&format!("[+]{c} ok\n"));
        } else {
            failed = true;
            lines.push_str(&format!("[-]{c} failed: reason withheld\n"));
        }
    }
    for e in &excluded {
        lines.push_str(&format!("[+]{e} excluded: ok\n"));
    }
    if failed {
        lines.push_str(&format!("{endpoint} check failed\n"));
        return text(500, lines);
    }
    if q.0.iter().any(|(k, _)| k == "verbose") {
        lines.push_str(&format!("{endpoint} check passed\n"));
        return text(200, lines);
    }
    text(200, "ok".into())
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Route {
    Health,
    Version,
    Api,
    Apis,
    ApiGroup(String),
    ResourceList { group: String, version: String },
    OpenApiV2,
    OpenApiV3Root,
    OpenApiV3 { group: String, version: String },
    Resource(Target),
    NotFound,
}

/// A resource request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Target {
    pub def: &'static ResourceDef,
    /// The namespace in the path (None: cluster-scoped, or all namespaces).
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<Sub>,
}

fn sub_of(def: &ResourceDef, s: &str) -> Option<Sub> {
    def.subresources.iter().copied().find(|x| x.name() == s)
}

/// Parse a request path.
pub(crate) fn route(path: &str) -> Route {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segs.as_slice() {
        ["healthz" | "livez" | "readyz", ..] => return Route::Health,
        ["version"] => return Route::Version,
        ["api"] => return Route::Api,
        ["apis"] => return Route::Apis,
        ["apis", g] => return Route::ApiGroup(g.to_string()),
        ["api", "v1"] => {
            return Route::ResourceList {
                group: String::new(),
                version: "v1".into(),
            }
        }
        ["apis", g, v] => {
            return Route::ResourceList {
                group: g.to_string(),
                version: v.to_string(),
            }
        }
        ["openapi", "v2"] => return Route::OpenApiV2,
        ["openapi", "v3"] => return Route::OpenApiV3Root,
        ["openapi", "v3", "api", v] => {
            return Route::OpenApiV3 {
                group: String::new(),
                version: v.to_string(),
            }
        }
        ["openapi", "v3", "apis", g, v] => {
            return Route::OpenApiV3 {
                group: g.to_string(),
                version: v.to_string(),
            }
        }
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Route::NotFound,
    };
    let find = |plural: &str| resources::find(group, version, plural);
    let target = match rest {
        // namespaces/{name}/status is the namespace's own subresource.
        ["namespaces", name, s]
            if group.is_empty() && find("namespaces").and_then(|d| sub_of(d, s)).is_some() =>
        {
            let def = find("namespaces").expect("checked");
            Target {
                def,
                namespace: None,
                name: Some(name.to_string()),
                sub: sub_of(def, s),
            }
        }
        ["namespaces", ns, plural, tail @ ..] if find(plural).is_some_and(|d| d.namespaced) => {
            let def = find(plural).expect("checked");
            match tail {
                [] => Target {
                    def,
                    namespace: Some(ns.to_string()),
                    name: None,
                    sub: None,
                },
                [name] => Target {
                    def,
                    namespace: Some(ns.to_string()),
                    name: Some(name.to_string()),
                    sub: None,
                },
                [name, s] => match sub_of(def, s) {
                    Some(sub) => Target {
                        def,
                        namespace: Some(ns.to_string()),
                        name: Some(name.to_string()),
                        sub: Some(sub),
                    },
                    None => return Route::NotFound,
                },
                _ => return Route::NotFound,
            }
        }
        [plural, tail @ ..] => {
            let Some(def) = find(plural) else {
                return Route::NotFound;
            };
            match tail {
                [] => Target {
                    def,
                    namespace: None,
                    name: None,
                    sub: None,
                },
                [name] if !def.namespaced => Target {
                    def,
                    namespace: None,
                    name: Some(name.to_string()),
                    sub: None,
                },
                [name, s] if !def.namespaced => match sub_of(def, s) {
                    Some(sub) => Target {
                        def,
                        namespace: None,
                        name: Some(name.to_string()),
                        sub: Some(sub),
                    },
                    None => return Route::NotFound,
                },
                _ => return Route::NotFound,
            }
        }
        _ => return Route::NotFound,
    };
    Route::Resource(target)
}

/// Parsed query parameters (multi-valued).
#[derive(Debug, Default, Clone)]
pub(crate) struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        Query(
            url::form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
    }
    pub fn all<'a>(&'a self, k: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(a, _)| a == k)
            .map(|(_, v)| v.as_str())
    }
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
    pub fn dry_run(&self) -> bool {
        self.all("dryRun").any(|v| v == "All")
    }
}

/// What representation the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repr {
    Object,
    /// meta.k8s.io Table (version "v1" or "v1beta1").
    Table(&'static str),
    PartialMetadata,
}

/// Content negotiation on Accept, as far as we care: Table and PartialObjectMetadata.
pub(crate) fn negotiate(accept: &str) -> Repr {
    for part in accept.split(',') {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        let has = |p: &str| params.contains(&p);
        if params
            .first()
            .is_some_and(|m| *m == "application/json" || *m == "*/*")
            && has("g=meta.k8s.io")
        {
            if has("as=Table") {
                return Repr::Table(if has("v=v1beta1") { "v1beta1" } else { "v1" });
            }
            if has("as=PartialObjectMetadata") || has("as=PartialObjectMetadataList") {
                return Repr::PartialMetadata;
            }
        }
        if params
            .first()
            .is_some_and(|m| *m == "application/json" || *m == "*/*" || *m == "application/yaml")
            && !params.iter().any(|p| p.starts_with("as="))
        {
            return Repr::Object;
        }
    }
    Repr::Object
}

pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(crate) fn json_response(code: u16, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec(v).expect("JSON values serialize");
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("cache-control", "no-cache, private")
        .body(full(body))
        .expect("static response parts are valid")
}

pub(crate) fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Expired { requested, oldest } => ApiError::expired(requested, oldest),
            // kube-apiserver passes etcd's error through as a 500 without a reason.
            e @ StoreError::TooLarge { .. } => ApiError::new(500, "", e.to_string()),
            other => ApiError::internal(other.to_string()),
        }
    }
}

/// Run blocking store work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("store task: {e}")))
}

/// Handle one request.
pub(crate) async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    user: Option<User>,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let r = route(&path);
    if r == Route::Health {
        return health(&state, &path, req.uri().query()).await;
    }
    let Some(user) = user else {
        return error_response(&ApiError::unauthorized());
    };
    // kube's max-in-flight filter: after authentication, before authorization.
    let _permit = if is_long_running(&r, req.uri().query()) {
        None
    } else {
        match state.inflight.admit(&method) {
            Some(p) => Some(p),
            None => return too_many_requests(),
        }
    };
    // A panic anywhere below answers this request alone with a 500 (kube's panic recovery).
    let inner = std::panic::AssertUnwindSafe(handle_authenticated(state, req, r, user, method, path));
    match futures::FutureExt::catch_unwind(inner).await {
        Ok(resp) => resp,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            tracing::error!(panic = %msg, "request handler panicked");
            error_response(&ApiError::internal("the request handler panicked"))
        }
    }
}

async fn handle_authenticated(
    state: Arc<State>,
    req: Request<Incoming>,
    r: Route,
    user: User,
    method: Method,
    path: String,
) -> Response<Body> {
    debug!(user = %user.name, %method, %path, query = req.uri().query().unwrap_or(""), "request");
    // Authorization (Node, RBAC; 403 like kube-apiserver), the review endpoints, and the user
    // for admission in the write handlers.
    let (req, user) = match authz::gate(&state, &user, &r, req).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let resp = match authz::REQUEST_USER.scope(user, dispatch(&state, r, req)).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    authz::after_request(&state, &method, &path, resp.status().as_u16());
    debug!(%method, %path, status = resp.status().as_u16(), "response");
    resp
}

async fn dispatch(
    state: &Arc<State>,
    r: Route,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let get_only = |m: &Method| {
        if *m == Method::GET {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed())
        }
    };
    match r {
        Route::Health => unreachable!("handled before authentication"),
        Route::Version => {
            get_only(req.method())?;
            Ok(json_response(200, &discovery::version()))
        }
        Route::Api => {
            get_only(req.method())?;
            Ok(json_response(
                200,
                &discovery::api_versions(&state.server_address),
            ))
        }
        Route::Apis => {
            get_only(req.method())?;
            Ok(json_response(200, &discovery::api_group_list()))
        }
        Route::ApiGroup(g) => {
            get_only(req.method())?;
            discovery::api_group(&g)
                .map(|d| json_response(200, &d))
                .ok_or_else(ApiError::no_route)
        }
        Route::ResourceList { group, version } => {
            get_only(req.method())?;
            discovery::resource_list(&group, &version)
                .map(|d| json_response(200, &d))
                .ok_or_else(ApiError::no_route)
        }
        Route::OpenApiV2 => {
            get_only(req.method())?;
            Ok(Response::builder()
                .header(http::header::CONTENT_TYPE, discovery::OPENAPI_V2_PB)
                .body(full(discovery::openapi_v2_pb()))
                .expect("valid"))
        }
        Route::OpenApiV3Root => {
            get_only(req.method())?;
            Ok(json_response(200, &discovery::openapi_v3_root()))
        }
        Route::OpenApiV3 { group, version } => {
            get_only(req.method())?;
            discovery::openapi_v3_doc(&group, &version)
                .map(|d| json_response(200, &d))
                .ok_or_else(ApiError::no_route)
        }
        Route::NotFound => Err(ApiError::no_route()),
        Route::Resource(t) => resource(state, t, req).await,
    }
}

/// How long reading a request body may take.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// kube's 413 for bodies over the limit.
pub(crate) fn body_too_large() -> ApiError {
    ApiError::new(
        413,
        "RequestEntityTooLarge",
        format!("Request entity too large: limit is {MAX_BODY}"),
    )
}

async fn read_body(req: Request<Incoming>) -> Result<(http::request::Parts, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(body_too_large());
    }
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    // A body sent too slowly is cut off like kube's request timeout (60 s) cuts its handler.
    let Ok(collected) = tokio::time::timeout(BODY_READ_TIMEOUT, limited.collect()).await else {
        let mut e = ApiError::new(
            504,
            "Timeout",
            "Timeout: request did not complete within requested timeout - context deadline exceeded",
        );
        e.details = Some(json!({}));
        return Err(e);
    };
    let bytes = match collected {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(body_too_large()),
        Err(e) => return Err(ApiError::bad_request(format!("reading request body: {e}"))),
    };
    Ok((parts, bytes))
}

fn content_type(parts: &http::request::Parts) -> String {
    parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Decode a JSON request body like kube's decoder would.
pub(crate) fn decode_json(body: &[u8], ct: &str) -> Result<Value, ApiError> {
    let media = ct.split(';').next().unwrap_or("").trim();
    if media == "application/vnd.kubernetes.protobuf" {
        return super::proto::decode(body).map_err(|e| match e {
            super::proto::ProtoError::UnsupportedKind(_) => {
                ApiError::unsupported_media_type(media, &["application/json"])
            }
            other => ApiError::bad_request(format!("error decoding request body: {other}")),
        });
    }
    if !(media.is_empty()
        || media == "application/json"
        || media == "*/*"
        || media.ends_with("+json"))
    {
        return Err(ApiError::unsupported_media_type(
            media,
            &["application/json"],
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the body of the request was empty"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding request body: json: {e}")))
}

/// Duplicate keys of a JSON body (protobuf bodies cannot have them).
fn json_duplicates(body: &[u8], ct: &str) -> Vec<String> {
    if ct.starts_with("application/vnd.kubernetes.protobuf") {
        return vec![];
    }
    object::duplicate_fields(body)
}

fn accept_of(parts: &http::request::Parts) -> String {
    parts
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

async fn resource(
    state: &Arc<State>,
    t: Target,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let q = Query::parse(req.uri().query());
    let method = req.method().clone();
    let def = t.def;
    if def.namespaced && t.namespace.is_none() && !(method == Method::GET && t.name.is_none()) {
        return Err(ApiError::method_not_allowed());
    }
    let ns = t.namespace.clone().unwrap_or_default();
    match (t.name.clone(), t.sub) {
        (None, _) => match method {
            Method::GET => {
                if q.flag("watch") {
                    let accept = req
                        .headers()
                        .get(http::header::ACCEPT)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    watch::watch(state, def, t.namespace.as_deref(), &q, negotiate(accept)).await
                } else {
                    let (parts, _) = req.into_parts();
                    list(
                        state,
                        def,
                        t.namespace.as_deref(),
                        &q,
                        negotiate(&accept_of(&parts)),
                    )
                    .await
                }
            }
            Method::POST => {
                let (parts, body) = read_body(req).await?;
                let obj = decode_json(&body, &content_type(&parts))?;
                let dups = json_duplicates(&body, &content_type(&parts));
                create(state, def, &ns, obj, &dups, &q).await
            }
            Method::DELETE => {
                let (parts, body) = read_body(req).await?;
                delete_collection(state, def, &ns, &q, &body, &content_type(&parts)).await
            }
            _ => Err(ApiError::method_not_allowed()),
        },
        (Some(name), None) | (Some(name), Some(Sub::Status)) => {
            let status_only = t.sub == Some(Sub::Status);
            match method {
                Method::GET => {
                    let (parts, _) = req.into_parts();
                    get(state, def, &ns, &name, &q, negotiate(&accept_of(&parts))).await
                }
                Method::PUT => {
                    let (parts, body) = read_body(req).await?;
                    let obj = decode_json(&body, &content_type(&parts))?;
                    let dups = json_duplicates(&body, &content_type(&parts));
                    update(state, def, &ns, &name, obj, &dups, status_only, &q).await
                }
                Method::PATCH => {
                    let (parts, body) = read_body(req).await?;
                    let ct = content_type(&parts);
                    let Some(pt) = PatchType::from_content_type(&ct) else {
                        return Err(ApiError::unsupported_media_type(&ct, patch::ACCEPTED));
                    };
                    let p: Value = serde_json::from_slice(&body)
                        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                    patch_object(state, def, &ns, &name, pt, p, status_only, &q).await
                }
                Method::DELETE if !status_only => {
                    let (parts, body) = read_body(req).await?;
                    delete(state, def, &ns, &name, &q, &body, &content_type(&parts)).await
                }
                _ => Err(ApiError::method_not_allowed()),
            }
        }
        (Some(name), Some(Sub::Binding)) => {
            if method != Method::POST {
                return Err(ApiError::method_not_allowed());
            }
            let (parts, body) = read_body(req).await?;
            let b = decode_json(&body, &content_type(&parts))?;
            binding(state, def, &ns, &name, b, &q).await
        }
        (Some(name), Some(sub)) => {
            proxy::pod_subresource(state, def, &ns, &name, sub, &q, req).await
        }
    }
}

/// Render one object in the requested representation.
fn render_one(def: &ResourceDef, obj: &Value, repr: Repr) -> Value {
    match repr {
        Repr::Object => obj.clone(),
        Repr::PartialMetadata => table::partial_metadata(obj),
        Repr::Table(v) => table::table(
            def,
            &[obj],
            object::rv_of(obj),
            IncludeObject::Metadata,
            true,
            v,
            jiff::Timestamp::now(),
        ),
    }
}

async fn get(
    state: &Arc<State>,
    def: &'static ResourceDef,
    ns: &str,
    name: &str,
    q: &Query,
    repr: Repr,
) -> Result<Response<Body>, ApiError> {
    // kube: an unparsable resourceVersion is a storage error (500); one newer than the store
    // a 504 "Too large resource version"; otherwise the current object is at least as new.
    if let Some(rv) = watch::parse_resource_version(q.get("resourceVersion")).map_err(watch::bad_rv)? {
        let current = state.store.revision();
        if rv > current {
            return Err(watch::too_large_rv(rv, current));
        }
    }
    let store = state.store.clone();
    let key = def.key(ns, name);
    let obj = blocking(move || store.get(&key))
        .await??
        .ok_or_else(|| ApiError::not_found(def, name))?;
    Ok(json_response(200, &render_one(def, &obj, repr)))
}

/// Filters of a list or watch.
pub(crate) struct Filter {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub namespace: Option<String>,
}

impl Filter {
    pub fn new(def: &ResourceDef, ns: Option<&str>, q: &Query) -> Result<Filter, ApiError> {
        Ok(Filter {
            labels: LabelSelector::parse(q.get("labelSelector").unwrap_or(""))?,
            fields: FieldSelector::parse(
                q.get("fieldSelector").unwrap_or(""),
                def.plural,
                def.kind,
            )?,
            namespace: ns.map(str::to_string),
        })
    }
    pub fn matches(&self, def: &ResourceDef, obj: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| object::namespace_of(obj) == ns)
            && self.labels.matches(obj)
            && self.fields.matches(def.plural, obj)
    }
}

async fn list(
    state: &Arc<State>,
    def: &'static ResourceDef,
    ns: Option<&str>,
    q: &Query,
    repr: Repr,
) -> Result<Response<Body>, ApiError> {
    let want = watch::list_options(q, false)?;
    let filter = Filter::new(def, ns, q)?;
    let store = state.store.clone();
    let resource = def.qualified();
    let ns_owned = ns.map(str::to_string);
    let (items, mut rev) = blocking(move || store.list(&resource, ns_owned.as_deref())).await??;
    match want {
        ListRv::Any => {}
        ListRv::NotOlderThan(n) | ListRv::Exact(n) if n > rev => {
            return Err(watch::too_large_rv(n, rev))
        }
        ListRv::NotOlderThan(_) => {}
        ListRv::Exact(n) if n == rev => {}
        ListRv::Exact(n) => {
            // Only the current state is stored: it is the state at `n` if no object of this
            // resource changed between `n` and the snapshot (the watch history tells).
            let unchanged = state
                .store
                .events_after(&def.qualified(), n)
                .is_ok_and(|(events, _)| events.iter().all(|e| e.revision > rev));
            if !unchanged {
                return Err(ApiError::new(
                    410,
                    "Expired",
                    "The resourceVersion for the provided list is too old.",
                ));
            }
            rev = n;
        }
    }
    let items: Vec<Value> = items
        .into_iter()
        .filter(|o| filter.matches(def, o))
        .collect();
    let rv = rev.to_string();
    let body = match repr {
        Repr::Table(v) => {
            let include = IncludeObject::parse(q.get("includeObject"));
            let refs: Vec<&Value> = items.iter().collect();
            table::table(def, &refs, &rv, include, true, v, jiff::Timestamp::now())
        }
        Repr::PartialMetadata => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": rv},
            "items": items.iter().map(table::partial_metadata).collect::<Vec<_>>(),
        }),
        Repr::Object => json!({
            "kind": format!("{}List", def.kind),
            "apiVersion": def.api_version(),
            "metadata": {"resourceVersion": rv},
            "items": items,
        }),
    };
    Ok(json_response(200, &body))
}

async fn namespace_exists(store: &Arc<Store>, ns: &str) -> Result<(), ApiError> {
    let key = resources::namespaces().key("", ns);
    let s = store.clone();
    match blocking(move || s.get(&key)).await?? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(resources::namespaces(), ns)),
    }
}

fn field_validation(q: &Query) -> Result<object::FieldValidation, ApiError> {
    object::FieldValidation::parse(q.get("fieldValidation"))
}

/// Add kube's `Warning: 299 - "..."` headers.
fn with_warnings(mut resp: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        let v = format!("299 - {}", serde_json::Value::String(w.clone()));
        if let Ok(h) = http::HeaderValue::from_str(&v) {
            resp.headers_mut().append("warning", h);
        }
    }
    resp
}

async fn create(
    state: &Arc<State>,
    def: &'static ResourceDef,
    ns: &str,
    mut obj: Value,
    dups: &[String],
    q: &Query,
) -> Result<Response<Body>, ApiError> {
    let fv = field_validation(q)?;
    object::check_type(def, &mut obj, def.kind, &def.api_version())?;
    let warnings = object::typecheck_body(def, &mut obj, fv, dups)?;
    object::prepare_create(def, &mut obj, ns, &object::now_rfc3339())?;
    if def.namespaced {
        namespace_exists(&state.store, ns).await?;
    }
    let name = object::name_of(&obj).to_string();
    authz::admission(state, def, ns, &name).await?.check(def, ns, "", &obj, None)?;
    if q.dry_run() {
        let store = state.store.clone();
        let key = def.key(ns, &name);
        if blocking(move || store.get(&key)).await??.is_some() {
            return Err(ApiError::already_exists(def, &name));
        }
        return Ok(with_warnings(json_response(201, &obj), &warnings));
    }
    let store = state.store.clone();
    let key = def.key(ns, &name);
    let out = blocking(move || {
        store.transact(&key, |cur| {
            if cur.is_some() {
                Err(ApiError::already_exists(def, &name))
            } else {
                Ok(Action::Put(obj, ()))
            }
        })
    })
    .await???;
    Ok(with_warnings(
        json_response(201, &out.object.expect("put returns the object")),
        &warnings,
    ))
}

/// Store `new` (already prepared) replacing `old`, deleting it instead when finalizers are done.
fn put_or_finish(new: Value) -> Action<()> {
    if object::should_delete_after_update(&new) {
        Action::Delete(())
    } else {
        Action::Put(new, ())
    }
}

#[allow(clippy::too_many_arguments)]
async fn update(
    state: &Arc<State>,
    def: &'static ResourceDef,
    ns: &str,
    name: &str,
    mut obj: Value,
    dups: &[String],
    status_only: bool,
    q: &Query,
) -> Result<Response<Body>, ApiError> {
    let fv = field_validation(q)?;
    object::check_type(def, &mut obj, def.kind, &def.api_version())?;
    let warnings = object::typecheck_body(def, &mut obj, fv, dups)?;
    let adm = authz::admission(state, def, ns, name).await?;
    let sub = if status_only { "status" } else { "" };
    let ns_s = ns.to_string();
    let store = state.store.clone();
    let key = def.key(ns, name);
    let name_s = name.to_string();
    let dry = q.dry_run();
    let out = blocking(move || {
        store.transact(&key, |cur| {
            let cur = cur.ok_or_else(|| ApiError::not_found(def, &name_s))?;
            let new = object::prepare_update(def, obj, cur, status_only)?;
            adm.check(def, &ns_s, sub, &new, Some(cur))?;
            if dry {
                return Ok::<_, ApiError>(Action::Nothing(Some(new)));
            }
            Ok(match put_or_finish(new) {
                Action::Put(v, ()) => Action::Put(v, None),
                _ => Action::Delete(None),
            })
        })
    })
    .await???;
    let obj = out.value.or(out.object).expect("update yields an object");
    Ok(with_warnings(json_response(200, &obj), &warnings))
}

#[allow(clippy::too_many_arguments)]
async fn patch_object(
    state: &Arc<State>,
    def: &'static ResourceDef,
    ns: &str,
    name: &str,
    pt: PatchType,
    p: Value,
    status_only: bool,
    q: &Query,
) -> Result<Response<Body>, ApiError> {
    let fv = field_validation(q)?;
    let adm = authz::admission(state, def, ns, name).await?;
    let sub = if status_only { "status" } else { "" };
    let ns_s = ns.to_string();
    let store = state.store.clone();
    let key = def.key(ns, name);
    let name_s = name.to_string();
    let dry = q.dry_run();
    let out = blocking(move || {
        store.transact(&key, |cur| {
            let cur = cur.ok_or_else(|| ApiError::not_found(def, &name_s))?;
            let mut patched = patch::apply(pt, cur, &p)?;
            object::check_type(def, &mut patched, def.kind, &def.api_version())?;
            let warnings = object::typecheck(def, &mut patched, fv)?;
            let new = object::prepare_update(def, patched, cur, status_only)?;
            adm.check(def, &ns_s, sub, &new, Some(cur))?;
            if dry {
                return Ok::<_, ApiError>(Action::Nothing((Some(new), warnings)));
            }
            Ok(match put_or_finish(new) {
                Action::Put(v, ()) => Action::Put(v, (None, warnings)),
                _ => Action::Delete((None, warnings)),
            })
        })
    })
    .await???;
    let (dry_obj, warnings) = out.value;
    let obj = dry_obj.or(out.object).expect("patch yields an object");
    Ok(with_warnings(json_response(200, &obj), &warnings))
}

/// Go's `strconv.ParseInt(s, 10, 64)`, with its error text.
pub(crate) fn parse_int64(s: &str) -> Result<i64, String> {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("strconv.ParseInt: parsing {s:?}: invalid syntax"));
    }
    s.parse()
        .map_err(|_| format!("strconv.ParseInt: parsing {s:?}: value out of range"))
}

fn delete_options(q: &Query, body: &[u8], ct: &str) -> Result<DeleteOptions, ApiError> {
    let mut opts =
        DeleteOptions {
            grace_period_seconds: match q.get("gracePeriodSeconds") {
                Some(g) => Some(parse_int64(g).map_err(ApiError::bad_request)?),
                None => None,
            },
            propagation_policy: q.get("propagationPolicy").map(str::to_string),
            dry_run: q.dry_run(),
            ..Default::default()
        };
    if !body.iter().all(u8::is_ascii_whitespace) {
        let b = decode_json(body, ct)?;
        opts.merge_body(&b);
    }
    if let Some(p) = &opts.propagation_policy {
        if !["Orphan", "Background", "Foreground"].contains(&p.as_str()) {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy {p:?} is not supported"
            )));
        }
    }
    Ok(opts)
}

/// Delete one object; returns the response body (object or Success Status).
async fn delete_one(
    state: &Arc<State>,
    def: &'static ResourceDef,
    ns: &str,
    name: &str,
    opts: DeleteOptions,
) -> Result<Value, ApiError> {
    if def.plural == "namespaces" && ["default", "kube-system", "kube-public"].contains(&name) {
        return Err(ApiError::forbidden(
            def,
            name,
            "this namespace may not be deleted",
        ));
    }
    let store = state.store.clone();
    let key = def.key(ns, name);
    let name_s = name.to_string();
    let out = blocking(move || {
        store.transact(&key, |cur| {
            let cur = cur.ok_or_else(|| ApiError::not_found(def, &name_s))?;
            let decision = object::delete_decision(def, cur, &opts, jiff::Timestamp::now())?;
            if opts.dry_run {
                // kube answers a dry run with the object as the deletion would leave it.
                return Ok::<_, ApiError>(match decision {
                    DeleteDecision::Update(o) => Action::Nothing((false, Some(o))),
                    d => Action::Nothing((d == DeleteDecision::Remove, None)),
                });
            }
            Ok(match decision {
                DeleteDecision::Remove => Action::Delete((true, None)),
                DeleteDecision::Update(o) => Action::Put(o, (false, None)),
                DeleteDecision::Unchanged => Action::Nothing((false, None)),
            })
        })
    })
    .await???;
    let (removed, dry_obj) = out.value;
    let obj = dry_obj
        .or(out.object)
        .expect("delete returns the object");
    if removed && !def.return_deleted_object {
        return Ok(success_status(def, name, object::uid_of(&obj)));
    }
    Ok(obj)
}

async fn delete(
    state: &Arc<State>,
    def: &'static ResourceDef,
    ns: &str,
    name: &str,
    q: &Query,
    body: &[u8],
    ct: &str,
) -> Result<Response<Body>, ApiError> {
    let opts = delete_options(q, body, ct)?;
    let dry = opts.dry_run;
    let v = delete_one(state, def, ns, name, opts).await?;
    if def.plural == "namespaces" && !dry {
        // Stand-in for the namespace controller: delete everything in it (pods gracefully).
        let state = state.clone();
        let ns = name.to_string();
        tokio::spawn(async move { empty_namespace(&state, &ns).await });
    }
    Ok(json_response(200, &v))
}

/// Delete every object in namespace `ns` (kube's namespace controller, without the Terminating
/// phase: the namespace object itself is already gone).
async fn empty_namespace(state: &Arc<State>, ns: &str) {
    for def in resources::RESOURCES.iter().filter(|d| d.namespaced) {
        let store = state.store.clone();
        let resource = def.qualified();
        let ns_owned = ns.to_string();
        let items = match blocking(move || store.list(&resource, Some(&ns_owned))).await {
            Ok(Ok((items, _))) => items,
            other => {
                tracing::warn!(
                    namespace = ns,
                    resource = def.plural,
                    ?other,
                    "listing for namespace deletion failed"
                );
                continue;
            }
        };
        for o in items {
            let name = object::name_of(&o).to_string();
            if let Err(e) = delete_one(state, def, ns, &name, DeleteOptions::default()).await {
                if e.code != 404 {
                    tracing::warn!(namespace = ns, resource = def.plural, %name, error = %e, "namespace deletion");
                }
            }
        }
    }
}

async fn delete_collection(
    state: &Arc<State>,
    def: &'static ResourceDef,
    ns: &str,
    q: &Query,
    body: &[u8],
    ct: &str,
) -> Result<Response<Body>, ApiError> {
    if def.plural == "namespaces" {
        return Err(ApiError::method_not_allowed());
    }
    let opts = delete_options(q, body, ct)?;
    let filter = Filter::new(def, def.namespaced.then_some(ns), q)?;
    let store = state.store.clone();
    let resource = def.qualified();
    let ns_owned = def.namespaced.then(|| ns.to_string());
    let (items, rev) = blocking(move || store.list(&resource, ns_owned.as_deref())).await??;
    let mut out = Vec::new();
    for o in items.iter().filter(|o| filter.matches(def, o)) {
        match delete_one(
            state,
            def,
            object::namespace_of(o),
            object::name_of(o),
            opts.clone(),
        )
        .await
        {
            Ok(v) => out.push(if v["kind"] == "Status" { o.clone() } else { v }),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        200,
        &json!({"kind": format!("{}List", def.kind), "apiVersion": def.api_version(), "metadata": {"resourceVersion": rev.to_string()}, "items": out}),
    ))
}

/// POST pods/{name}/binding.
async fn binding(
    state: &Arc<State>,
    def: &'static ResourceDef,
    ns: &str,
    name: &str,
    b: Value,
    q: &Query,
) -> Result<Response<Body>, ApiError> {
    let kind = b.get("kind").and_then(Value::as_str).unwrap_or("Binding");
    if kind != "Binding" {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind (Binding)"
        )));
    }
    let target_kind = b
        .pointer("/target/kind")
        .and_then(Value::as_str)
        .unwrap_or("Node");
    let node = b
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if target_kind != "Node" && !target_kind.is_empty() {
        return Err(ApiError::invalid(
            def,
            name,
            vec![super::status::Cause::invalid(
                "target.kind",
                &json!(target_kind),
                "must be empty or 'Node'",
            )],
        ));
    }
    if node.is_empty() {
        return Err(ApiError::invalid(
            def,
            name,
            vec![super::status::Cause::required("target.name", "")],
        ));
    }
    let body_name = b
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or(name);
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let uid = b
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(str::to_string);
    let store = state.store.clone();
    let key = def.key(ns, name);
    let name_s = name.to_string();
    let dry = q.dry_run();
    let now = object::now_rfc3339();
    blocking(move || {
        store.transact(&key, |cur| {
            let cur = cur.ok_or_else(|| ApiError::not_found(def, &name_s))?;
            let conflict =
                |why: String| ApiError::conflict("pods/binding", "", "pods/binding", &name_s, &why);
            if let Some(u) = &uid {
                if u != object::uid_of(cur) {
                    return Err(conflict(format!(
                        "Precondition failed: UID in precondition: {u}, UID in object meta: {}",
                        object::uid_of(cur)
                    )));
                }
            }
            if object::is_deleting(cur) {
                return Err(conflict(format!(
                    "pod {name_s} is being deleted, cannot be assigned to a host"
                )));
            }
            if pods::is_bound(cur) {
                let n = cur
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                return Err(conflict(format!(
                    "pod {name_s} is already assigned to node {n:?}"
                )));
            }
            let mut o = cur.clone();
            pods::bind(&mut o, &node, &now);
            Ok(if dry {
                Action::Nothing(())
            } else {
                Action::Put(o, ())
            })
        })
    })
    .await???;
    Ok(json_response(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(r: Route) -> Target {
        match r {
            Route::Resource(t) => t,
            other => panic!("not a resource route: {other:?}"),
        }
    }

    #[test]
    fn routes() {
        assert_eq!(route("/version"), Route::Version);
        assert_eq!(route("/api"), Route::Api);
        assert_eq!(
            route("/api/v1"),
            Route::ResourceList {
                group: "".into(),
                version: "v1".into()
            }
        );
        assert_eq!(
            route("/apis/coordination.k8s.io"),
            Route::ApiGroup("coordination.k8s.io".into())
        );
        let t = target(route("/api/v1/namespaces/default/pods/web/exec"));
        assert_eq!(
            (
                t.def.plural,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.sub
            ),
            ("pods", Some("default"), Some("web"), Some(Sub::Exec))
        );
        let t = target(route("/api/v1/namespaces/default"));
        assert_eq!(
            (t.def.plural, t.namespace.as_deref(), t.name.as_deref()),
            ("namespaces", None, Some("default"))
        );
        let t = target(route("/api/v1/namespaces/default/status"));
        assert_eq!(
            (t.def.plural, t.name.as_deref(), t.sub),
            ("namespaces", Some("default"), Some(Sub::Status))
        );
        let t = target(route("/api/v1/namespaces"));
        assert_eq!((t.def.plural, t.name), ("namespaces", None));
        let t = target(route("/api/v1/pods"));
        assert_eq!((t.def.plural, t.namespace), ("pods", None));
        let t = target(route("/api/v1/nodes/n1/status"));
        assert_eq!(
            (t.def.plural, t.name.as_deref(), t.sub),
            ("nodes", Some("n1"), Some(Sub::Status))
        );
        let t = target(route(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1",
        ));
        assert_eq!((t.def.plural, t.name.as_deref()), ("leases", Some("n1")));
        assert_eq!(route("/api/v1/widgets"), Route::NotFound);
        assert_eq!(
            route("/api/v1/namespaces/default/pods/web/nope"),
            Route::NotFound
        );
        assert_eq!(route("/api/v1/pods/web"), Route::NotFound);
        assert_eq!(route("/openapi/v2"), Route::OpenApiV2);
        assert_eq!(route("/openapi/v3"), Route::OpenApiV3Root);
        assert_eq!(
            route("/openapi/v3/apis/coordination.k8s.io/v1"),
            Route::OpenApiV3 {
                group: "coordination.k8s.io".into(),
                version: "v1".into()
            }
        );
        assert_eq!(route("/healthz"), Route::Health);
    }

    #[test]
    fn accept_negotiation() {
        assert_eq!(negotiate("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"), Repr::Table("v1"));
        assert_eq!(
            negotiate("application/json;as=Table;v=v1beta1;g=meta.k8s.io, application/json"),
            Repr::Table("v1beta1")
        );
        assert_eq!(negotiate("application/json"), Repr::Object);
        assert_eq!(negotiate(""), Repr::Object);
        assert_eq!(
            negotiate("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"),
            Repr::PartialMetadata
        );
        assert_eq!(
            negotiate("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"),
            Repr::Object
        );
    }

    #[test]
    fn inflight_caps_and_long_running_requests() {
        let caps = Inflight::new(2, 1);
        let a = caps.admit(&Method::GET).unwrap();
        let _b = caps.admit(&Method::GET).unwrap();
        assert!(caps.admit(&Method::GET).is_none(), "third read past a cap of 2");
        let w = caps.admit(&Method::POST).unwrap();
        assert!(caps.admit(&Method::DELETE).is_none(), "second write past a cap of 1");
        drop(a);
        drop(w);
        assert!(caps.admit(&Method::GET).is_some() && caps.admit(&Method::PATCH).is_some());
        let r = too_many_requests();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[http::header::RETRY_AFTER], "1");
        let e = ApiError::new(429, "TooManyRequests", "Too many requests, please try again later.");
        assert_eq!(e.to_status()["reason"], "TooManyRequests");
        let pods = route("/api/v1/namespaces/default/pods");
        assert!(is_long_running(&pods, Some("watch=true")));
        assert!(!is_long_running(&pods, None));
        assert!(is_long_running(&route("/api/v1/namespaces/default/pods/p/exec"), None));
        assert!(is_long_running(&route("/api/v1/namespaces/default/pods/p/log"), Some("follow=true")));
        assert!(!is_long_running(&route("/api/v1/namespaces/default/pods/p"), Some("watch=true")));
        assert_eq!(parse_int64("9223372036854775807"), Ok(i64::MAX));
        assert_eq!(parse_int64("abc").unwrap_err(), r#"strconv.ParseInt: parsing "abc": invalid syntax"#);
        assert!(parse_int64("99999999999999999999").unwrap_err().ends_with("value out of range"));
        assert_eq!(body_too_large().message, "Request entity too large: limit is 3145728");
    }

    #[test]
    fn query_and_decoding() {
        let q = Query::parse(Some("command=ls&command=-l&watch=1&dryRun=All"));
        assert_eq!(q.all("command").collect::<Vec<_>>(), vec!["ls", "-l"]);
        assert!(q.flag("watch") && q.dry_run());
        assert_eq!(
            decode_json(b"{bad", "application/json").unwrap_err().code,
            400
        );
        assert_eq!(decode_json(b"", "application/json").unwrap_err().code, 400);
        assert_eq!(
            decode_json(b"a: b", "application/yaml").unwrap_err().code,
            415
        );
        assert!(decode_json(b"{}", "").is_ok());
    }
}
