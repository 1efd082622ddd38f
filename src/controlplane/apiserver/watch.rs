//! Watch: newline-delimited WatchEvent JSON over a chunked response, one chunk per event.
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::handlers::{blocking, Filter, Query, Repr};
use super::resources::ResourceDef;
use super::status::{ApiError, Cause};
use super::table::{self, IncludeObject};
use super::State;
use crate::controlplane::store::{Event, EventType, StoreError};
use crate::streamproxy::{Body, BoxError};

/// How often bookmarks are sent when the client allows them.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);

/// What a stored event means for a watcher with `filter` (kube's "left the selection → DELETED"
/// rule): None when the watcher does not see it.
pub(crate) fn translate(
    def: &ResourceDef,
    filter: &Filter,
    e: &Event,
) -> Option<(EventType, Arc<Value>)> {
    let now = filter.matches(def, &e.object);
    let before = e.prev.as_ref().is_some_and(|p| filter.matches(def, p));
    match e.kind {
        EventType::Added => now.then(|| (EventType::Added, e.object.clone())),
        EventType::Deleted => before.then(|| (EventType::Deleted, e.object.clone())),
        EventType::Modified => match (before, now) {
            (true, true) => Some((EventType::Modified, e.object.clone())),
            (false, true) => Some((EventType::Added, e.object.clone())),
            (true, false) => Some((EventType::Deleted, e.object.clone())),
            (false, false) => None,
        },
    }
}

/// Encoder of watch events in the negotiated representation.
struct Encoder {
    def: &'static ResourceDef,
    repr: Repr,
    include: IncludeObject,
    sent_columns: bool,
}

impl Encoder {
    fn event(&mut self, kind: &str, obj: &Value) -> Bytes {
        let object = match self.repr {
            Repr::Object => obj.clone(),
            Repr::PartialMetadata => table::partial_metadata(obj),
            Repr::Table(v) => {
                let t = table::table(
                    self.def,
                    &[obj],
                    super::object::rv_of(obj),
                    self.include,
                    !self.sent_columns,
                    v,
                    jiff::Timestamp::now(),
                );
                self.sent_columns = true;
                t
            }
        };
        line(&json!({"type": kind, "object": object}))
    }
    fn bookmark(&self, rev: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(
            &json!({"type": "BOOKMARK", "object": {"kind": self.def.kind, "apiVersion": self.def.api_version(), "metadata": meta}}),
        )
    }
}

fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).expect("JSON values serialize");
    b.push(b'\n');
    Bytes::from(b)
}

/// Go's `strconv.ParseUint(s, 10, 64)` error text for a non-number.
fn parse_uint(s: &str) -> Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("strconv.ParseUint: parsing {s:?}: invalid syntax"));
    }
    s.parse()
        .map_err(|_| format!("strconv.ParseUint: parsing {s:?}: value out of range"))
}

/// kube's APIObjectVersioner.ParseResourceVersion: "" and "0" mean "any" (None).
pub(crate) fn parse_resource_version(s: Option<&str>) -> Result<Option<u64>, String> {
    match s {
        None | Some("") | Some("0") => Ok(None),
        Some(s) => parse_uint(s)
            .map(Some)
            .map_err(|e| format!("resourceVersion: Invalid value: {s:?}: {e}")),
    }
}

/// The error kube answers for an unparsable resourceVersion on GET and WATCH (a storage error
/// passed through: 500 without a reason).
pub(crate) fn bad_rv(msg: String) -> ApiError {
    ApiError::new(500, "", msg)
}

/// 504 for a resourceVersion newer than the store's (kube's watch cache "Too large resource
/// version").
pub(crate) fn too_large_rv(requested: u64, current: u64) -> ApiError {
    let mut e = ApiError::new(
        504,
        "Timeout",
        format!("Timeout: Too large resource version: {requested}, current: {current}"),
    );
    e.details = Some(json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}));
    e
}

/// `ListOptions.meta.k8s.io "" is invalid: ...` (422) from kube's ValidateListOptions.
fn invalid_list_options(causes: Vec<Cause>) -> ApiError {
    let text = if causes.len() == 1 {
        causes[0].text()
    } else {
        format!(
            "[{}]",
            causes.iter().map(Cause::text).collect::<Vec<_>>().join(", ")
        )
    };
    let mut e = ApiError::new(422, "Invalid", format!("ListOptions.meta.k8s.io \"\" is invalid: {text}"));
    e.details = Some(json!({"group": "meta.k8s.io", "kind": "ListOptions", "causes": causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect::<Vec<_>>()}));
    e
}

/// How a list must relate to the requested resourceVersion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListRv {
    /// No resourceVersion (or "0"): the current state.
    Any,
    /// At least this revision (resourceVersion=N, or resourceVersionMatch=NotOlderThan).
    NotOlderThan(u64),
    /// Exactly this revision.
    Exact(u64),
}

/// kube's ValidateListOptions (list, or watch when `watch`) and resourceVersion parsing for a
/// list: 422 for bad combinations, 400 for an unparsable resourceVersion on a list (500 on a
/// watch, as kube).
pub(crate) fn list_options(q: &Query, watch: bool) -> Result<ListRv, ApiError> {
    let rv = q.get("resourceVersion").unwrap_or("");
    let rvm = q.get("resourceVersionMatch").unwrap_or("");
    let send_initial = q.get("sendInitialEvents");
    let cont = q.get("continue").unwrap_or("");
    let mut causes = Vec::new();
    if watch {
        if send_initial.is_some() && rvm != "NotOlderThan" {
            causes.push(Cause::forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if !rvm.is_empty() {
            if send_initial.is_none() {
                causes.push(Cause::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                ));
            }
            if rvm != "NotOlderThan" {
                causes.push(Cause::unsupported("resourceVersionMatch", &json!(rvm), &["NotOlderThan"]));
            }
            if !cont.is_empty() {
                causes.push(Cause::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
        }
    } else {
        if !rvm.is_empty() {
            if rv.is_empty() {
                causes.push(Cause::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if !cont.is_empty() {
                causes.push(Cause::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            if rvm != "Exact" && rvm != "NotOlderThan" {
                causes.push(Cause::unsupported(
                    "resourceVersionMatch",
                    &json!(rvm),
                    &["Exact", "NotOlderThan", ""],
                ));
            }
            if rvm == "Exact" && rv == "0" {
                causes.push(Cause::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
        }
        if send_initial.is_some() {
            causes.push(Cause::forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for list",
            ));
        }
    }
    if !causes.is_empty() {
        return Err(invalid_list_options(causes));
    }
    let parsed = parse_resource_version(Some(rv)).map_err(|e| {
        if watch {
            bad_rv(e)
        } else {
            ApiError::bad_request(format!("invalid resource version: {e}"))
        }
    })?;
    Ok(match parsed {
        None => ListRv::Any,
        Some(n) if rvm == "Exact" => ListRv::Exact(n),
        Some(n) => ListRv::NotOlderThan(n),
    })
}

fn parse_rv(q: &Query) -> Result<Option<u64>, ApiError> {
    Ok(match list_options(q, true)? {
        ListRv::Any => None,
        ListRv::NotOlderThan(n) | ListRv::Exact(n) => Some(n),
    })
}

/// Serve a watch of `def` (in `ns` if given).
pub(crate) async fn watch(
    state: &Arc<State>,
    def: &'static ResourceDef,
    ns: Option<&str>,
    q: &Query,
    repr: Repr,
) -> Result<Response<Body>, ApiError> {
    let filter = Filter::new(def, ns, q)?;
    let from = parse_rv(q)?;
    let send_initial = q.get("sendInitialEvents") == Some("true");
    let bookmarks = q.flag("allowWatchBookmarks");
    let timeout = match q.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()) {
        Some(t) if t > 0 => Duration::from_secs(t),
        // kube-apiserver: min-request-timeout (1800 s) randomised up to twice that.
        _ => Duration::from_secs(1800 + (uuid::Uuid::new_v4().as_bytes()[0] as u64 * 1800 / 256)),
    };
    let store = state.store.clone();
    let resource = def.qualified();
    let store_w = store.clone();
    // sendInitialEvents=true with a revision: kube streams the state at that revision; we send
    // the current state, which is at least as new.
    let watch_from = if send_initial { None } else { from };
    let w = match blocking(move || store_w.watch(&resource, watch_from)).await? {
        Ok(w) => w,
        // Like kube's watch cache (newErrWatcher): a 200 stream with a single ERROR event.
        Err(StoreError::Expired { requested, oldest }) => {
            let status = ApiError::expired(requested, oldest).to_status();
            let body = line(&json!({"type": "ERROR", "object": status}));
            return Ok(Response::builder()
                .status(200)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(super::handlers::full(body))
                .expect("valid response"));
        }
        Err(e) => return Err(e.into()),
    };
    let mut enc = Encoder {
        def,
        repr,
        include: IncludeObject::parse(q.get("includeObject")),
        sent_columns: false,
    };

    // Few encoded events in flight per watcher (each up to an object's 1.5 MiB).
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut last = w.start_revision;
        // Initial state (watch from "now", rv unset or 0, or sendInitialEvents).
        for obj in &w.initial {
            if filter.matches(def, obj) && tx.send(enc.event("ADDED", obj)).await.is_err() {
                return;
            }
        }
        if send_initial && tx.send(enc.bookmark(last, true)).await.is_err() {
            return;
        }
        for e in &w.replay {
            last = e.revision;
            if let Some((k, o)) = translate(def, &filter, e) {
                if tx.send(enc.event(k.as_str(), &o)).await.is_err() {
                    return;
                }
            }
        }
        let mut live = w.live;
        let mut tick = tokio::time::interval(BOOKMARK_INTERVAL);
        tick.tick().await;
        let resource = def.qualified();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = tick.tick(), if bookmarks => {
                    if tx.send(enc.bookmark(last, false)).await.is_err() { return; }
                    continue;
                }
                r = live.changed() => if r.is_err() { return },
            }
            // Everything after `last` from the store's history window; a watcher that fell
            // behind the window (it is bounded in events and bytes) gets 410 Expired.
            let events = match store.events_after(&resource, last) {
                Ok((events, head)) => {
                    last = head;
                    events
                }
                Err(StoreError::Expired { requested, oldest }) => {
                    let status = ApiError::expired(requested, oldest).to_status();
                    let _ = tx
                        .send(line(&json!({"type": "ERROR", "object": status})))
                        .await;
                    return;
                }
                Err(_) => return,
            };
            for e in &events {
                if let Some((k, o)) = translate(def, &filter, e) {
                    if tx.send(enc.event(k.as_str(), &o)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
    });
    let body = StreamBody::new(stream).boxed_unsync();
    Ok(Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("cache-control", "no-cache, private")
        .body(body)
        .expect("valid response"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controlplane::apiserver::resources::find;
    use crate::controlplane::store::Key;

    fn ev(kind: EventType, prev: Option<Value>, obj: Value) -> Event {
        Event {
            revision: 1,
            kind,
            key: Key::new("pods", "default", "p"),
            object: Arc::new(obj),
            prev: prev.map(Arc::new),
        }
    }

    #[test]
    fn selection_transitions() {
        let def = find("", "v1", "pods").unwrap();
        let q = Query::parse(Some("fieldSelector=spec.nodeName%3Dn1"));
        let f = Filter::new(def, Some("default"), &q).unwrap();
        let unbound = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {}});
        let bound =
            json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"nodeName": "n1"}});
        let other =
            json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"nodeName": "n2"}});
        assert!(translate(def, &f, &ev(EventType::Added, None, unbound.clone())).is_none());
        assert_eq!(
            translate(
                def,
                &f,
                &ev(EventType::Modified, Some(unbound.clone()), bound.clone())
            )
            .unwrap()
            .0,
            EventType::Added
        );
        assert_eq!(
            translate(
                def,
                &f,
                &ev(EventType::Modified, Some(bound.clone()), bound.clone())
            )
            .unwrap()
            .0,
            EventType::Modified
        );
        assert_eq!(
            translate(
                def,
                &f,
                &ev(EventType::Modified, Some(bound.clone()), other)
            )
            .unwrap()
            .0,
            EventType::Deleted
        );
        assert_eq!(
            translate(def, &f, &ev(EventType::Deleted, Some(bound.clone()), bound))
                .unwrap()
                .0,
            EventType::Deleted
        );
        let elsewhere =
            json!({"metadata": {"name": "p", "namespace": "x"}, "spec": {"nodeName": "n1"}});
        assert!(translate(def, &f, &ev(EventType::Added, None, elsewhere)).is_none());
    }

    #[test]
    fn resource_versions() {
        assert_eq!(
            parse_rv(&Query::parse(Some("resourceVersion=0"))).unwrap(),
            None
        );
        assert_eq!(
            parse_rv(&Query::parse(Some("resourceVersion=12"))).unwrap(),
            Some(12)
        );
        let e = parse_rv(&Query::parse(Some("resourceVersion=x"))).unwrap_err();
        assert_eq!((e.code, e.to_status().get("reason")), (500, None));
        assert_eq!(e.message, r#"resourceVersion: Invalid value: "x": strconv.ParseUint: parsing "x": invalid syntax"#);
        let l = |q: &str| list_options(&Query::parse(Some(q)), false);
        let e = l("resourceVersion=-1").unwrap_err();
        assert_eq!((e.code, e.reason), (400, "BadRequest"));
        assert_eq!(e.message, r#"invalid resource version: resourceVersion: Invalid value: "-1": strconv.ParseUint: parsing "-1": invalid syntax"#);
        assert!(l("resourceVersion=99999999999999999999999").unwrap_err().message.ends_with("value out of range"));
        assert_eq!(l("resourceVersion=5").unwrap(), ListRv::NotOlderThan(5));
        assert_eq!(l("resourceVersion=5&resourceVersionMatch=Exact").unwrap(), ListRv::Exact(5));
        assert_eq!(l("resourceVersion=0&resourceVersionMatch=NotOlderThan").unwrap(), ListRv::Any);
        let e = l("resourceVersionMatch=NotOlderThan").unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(e.message, r#"ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"#);
        assert_eq!(e.to_status()["details"]["kind"], "ListOptions");
        assert_eq!(l("resourceVersion=1&resourceVersionMatch=Bogus").unwrap_err().message, r#"ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Unsupported value: "Bogus": supported values: "Exact", "NotOlderThan", """#);
        assert_eq!(l("resourceVersion=0&resourceVersionMatch=Exact").unwrap_err().message, r#"ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0""#);
        assert!(l("sendInitialEvents=true").unwrap_err().message.ends_with("sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list"));
        let w = |q: &str| list_options(&Query::parse(Some(q)), true);
        assert!(w("sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true").is_ok());
        assert_eq!(w("resourceVersion=1&resourceVersionMatch=NotOlderThan").unwrap_err().message, r#"ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"#);
        assert_eq!(w("resourceVersionMatch=Exact&sendInitialEvents=true").unwrap_err().message, r#"ListOptions.meta.k8s.io "" is invalid: [resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan, resourceVersionMatch: Unsupported value: "Exact": supported values: "NotOlderThan"]"#);
        let e = too_large_rv(99, 81);
        assert_eq!((e.code, e.message.as_str()), (504, "Timeout: Too large resource version: 99, current: 81"));
    }
}
