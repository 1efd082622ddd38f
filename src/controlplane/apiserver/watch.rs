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
use super::status::ApiError;
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

fn parse_rv(q: &Query) -> Result<Option<u64>, ApiError> {
    match q.get("resourceVersion") {
        None | Some("") | Some("0") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s}"))),
    }
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
        assert!(parse_rv(&Query::parse(Some("resourceVersion=x"))).is_err());
    }
}
