//! Embedded persistent object store for the API server (redb).
//!
//! Objects are JSON documents keyed by (resource, namespace, name), where `resource` is the
//! group-qualified plural (`pods`, `leases.coordination.k8s.io`). One global revision counter is
//! bumped by every write and persisted in the same redb transaction as the object; an object's
//! `metadata.resourceVersion` is the revision of its last write. Every acknowledged write is
//! committed (redb's default `Durability::Immediate`, i.e. fsync'd).
//!
//! Watch: writes append to an in-memory history window (the last [`HISTORY_WINDOW`] events) and are
//! published on a tokio broadcast channel. A watch resumes from a revision if every event after it
//! is still in the window, else it fails with [`StoreError::Expired`] (the API server's 410 Gone).
//! After a restart the window is empty and starts at the persisted revision.
//!
//! The store is synchronous (redb is); the API server calls it from `spawn_blocking`.
use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use redb::{ReadableTable, TableDefinition};
use serde_json::Value;
use tokio::sync::broadcast;

/// How many recent events the watch history keeps.
pub const HISTORY_WINDOW: usize = 10_000;

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION_KEY: &str = "revision";

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store database: {0}")]
    Db(Box<redb::Error>),
    #[error("corrupt object {key}: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
    #[error("too old resource version: {requested} ({oldest})")]
    Expired { requested: u64, oldest: u64 },
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(Box::new(e.into())) }
        }
    )*};
}
db_err!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The identity of one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// Group-qualified plural resource: `pods`, `leases.coordination.k8s.io`.
    pub resource: String,
    /// Empty for cluster-scoped resources.
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(resource: &str, namespace: &str, name: &str) -> Self {
        Key {
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
    /// The redb key. NUL never occurs in names, so prefixes are unambiguous.
    fn encode(&self) -> String {
        format!("{}\0{}\0{}", self.resource, self.namespace, self.name)
    }
    fn decode(s: &str) -> Option<Key> {
        let mut it = s.splitn(3, '\0');
        Some(Key::new(it.next()?, it.next()?, it.next()?))
    }
}

/// Prefix of all keys of `resource` (in `namespace` if given).
fn prefix(resource: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("{resource}\0{ns}\0"),
        None => format!("{resource}\0"),
    }
}

/// The smallest string greater than every string starting with `p`.
fn prefix_end(p: &str) -> String {
    // Our prefixes end with NUL; bumping that to \x01 bounds the range.
    let mut s = p.to_string();
    s.pop();
    s.push('\u{1}');
    s
}

/// Kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Debug, Clone)]
pub struct Event {
    pub revision: u64,
    pub kind: EventType,
    pub key: Key,
    /// The object after the change; for deletions the last state, with resourceVersion set to the
    /// deletion's revision (as kube-apiserver does).
    pub object: Arc<Value>,
    /// The object before the change (None for ADDED).
    pub prev: Option<Arc<Value>>,
}

/// What a [`Store::transact`] closure decides to do with the current object.
#[derive(Debug)]
pub enum Action<T> {
    /// Store this object (create or replace). `metadata.resourceVersion` is set by the store.
    Put(Value, T),
    /// Delete the object.
    Delete(T),
    /// Change nothing.
    Nothing(T),
}

/// The outcome of a transaction.
#[derive(Debug)]
pub struct Outcome<T> {
    /// The stored object (after Put), the deleted object (after Delete), or the current object.
    pub object: Option<Value>,
    pub value: T,
    /// Whether something was written.
    pub written: bool,
}

struct Inner {
    revision: u64,
    /// Events with revision > `history_start` are all in `history`.
    history_start: u64,
    history: VecDeque<Event>,
    tx: broadcast::Sender<Event>,
}

/// The store; cheap to share behind an `Arc`.
pub struct Store {
    db: redb::Database,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// A watch: the events to replay, then the live receiver.
pub struct Watch {
    /// For a watch from "now" (no revision): the current objects, to be sent as ADDED.
    pub initial: Vec<Value>,
    /// Revision the initial state / replay corresponds to.
    pub start_revision: u64,
    /// Past events after the requested revision.
    pub replay: Vec<Event>,
    /// Live events; skip those with revision <= the last replayed one.
    pub live: broadcast::Receiver<Event>,
}

impl Store {
    /// Open (or create) the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = redb::Database::create(path)?;
        let txn = db.begin_write()?;
        let revision = {
            let _ = txn.open_table(OBJECTS)?;
            let meta = txn.open_table(META)?;
            let r = meta.get(REVISION_KEY)?.map(|g| g.value()).unwrap_or(0);
            r
        };
        txn.commit()?;
        let (tx, _) = broadcast::channel(4096);
        Ok(Store {
            db,
            inner: Mutex::new(Inner {
                revision,
                history_start: revision,
                history: VecDeque::new(),
                tx,
            }),
        })
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        self.inner.lock().unwrap().revision
    }

    /// Read one object.
    pub fn get(&self, key: &Key) -> Result<Option<Value>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(OBJECTS)?;
        let k = key.encode();
        match t.get(k.as_str())? {
            None => Ok(None),
            Some(v) => Ok(Some(parse(&k, v.value())?)),
        }
    }

    /// All objects of `resource` (in `namespace` if given), sorted by namespace and name, and the
    /// revision of this snapshot.
    pub fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<(Vec<Value>, u64), StoreError> {
        let txn = self.db.begin_read()?;
        let rev = txn
            .open_table(META)?
            .get(REVISION_KEY)?
            .map(|g| g.value())
            .unwrap_or(0);
        let t = txn.open_table(OBJECTS)?;
        let out = scan(&t, resource, namespace)?;
        Ok((out, rev))
    }

    /// Atomically read the current object at `key`, let `f` decide, and apply its decision with
    /// a new revision. `f` runs under the store's write lock: keep it short and pure.
    pub fn transact<T, E>(
        &self,
        key: &Key,
        f: impl FnOnce(Option<&Value>) -> Result<Action<T>, E>,
    ) -> Result<Result<Outcome<T>, E>, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let txn = self.db.begin_write()?;
        let k = key.encode();
        let event;
        let outcome;
        {
            let mut t = txn.open_table(OBJECTS)?;
            let current = match t.get(k.as_str())? {
                None => None,
                Some(v) => Some(parse(&k, v.value())?),
            };
            let action = match f(current.as_ref()) {
                Ok(a) => a,
                Err(e) => return Ok(Err(e)),
            };
            let rev = inner.revision + 1;
            match action {
                Action::Nothing(v) => {
                    return Ok(Ok(Outcome {
                        object: current,
                        value: v,
                        written: false,
                    }));
                }
                Action::Put(mut obj, v) => {
                    set_resource_version(&mut obj, rev);
                    let bytes = serde_json::to_vec(&obj).expect("JSON values serialize");
                    t.insert(k.as_str(), bytes.as_slice())?;
                    let kind = if current.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    };
                    event = Event {
                        revision: rev,
                        kind,
                        key: key.clone(),
                        object: Arc::new(obj.clone()),
                        prev: current.map(Arc::new),
                    };
                    outcome = Outcome {
                        object: Some(obj),
                        value: v,
                        written: true,
                    };
                }
                Action::Delete(v) => {
                    let Some(mut old) = current else {
                        return Ok(Ok(Outcome {
                            object: None,
                            value: v,
                            written: false,
                        }));
                    };
                    t.remove(k.as_str())?;
                    let prev = old.clone();
                    set_resource_version(&mut old, rev);
                    event = Event {
                        revision: rev,
                        kind: EventType::Deleted,
                        key: key.clone(),
                        object: Arc::new(old.clone()),
                        prev: Some(Arc::new(prev)),
                    };
                    outcome = Outcome {
                        object: Some(old),
                        value: v,
                        written: true,
                    };
                }
            }
            let mut meta = txn.open_table(META)?;
            meta.insert(REVISION_KEY, rev)?;
        }
        txn.commit()?;
        inner.revision = event.revision;
        push_history(&mut inner, event.clone());
        let _ = inner.tx.send(event);
        Ok(Ok(outcome))
    }

    /// Start a watch of `resource` (namespace filtering is the caller's). `from`: None = start now
    /// with the current objects as `initial`; Some(rev) = every event after `rev`.
    pub fn watch(&self, resource: &str, from: Option<u64>) -> Result<Watch, StoreError> {
        let inner = self.inner.lock().unwrap();
        let live = inner.tx.subscribe();
        match from {
            None => {
                // Writers hold `inner` through commit, so a read transaction begun under it is a
                // snapshot at `inner.revision`; the scan itself then runs without blocking writers.
                let txn = self.db.begin_read()?;
                let start_revision = inner.revision;
                drop(inner);
                let t = txn.open_table(OBJECTS)?;
                let initial = scan(&t, resource, None)?;
                Ok(Watch {
                    initial,
                    start_revision,
                    replay: vec![],
                    live,
                })
            }
            Some(rev) => {
                if rev < inner.history_start {
                    return Err(StoreError::Expired {
                        requested: rev,
                        oldest: inner.history_start,
                    });
                }
                let replay = inner
                    .history
                    .iter()
                    .filter(|e| e.revision > rev && e.key.resource == resource)
                    .cloned()
                    .collect();
                Ok(Watch {
                    initial: vec![],
                    start_revision: rev.min(inner.revision),
                    replay,
                    live,
                })
            }
        }
    }
}

fn push_history(inner: &mut Inner, e: Event) {
    if inner.history.len() >= HISTORY_WINDOW {
        if let Some(old) = inner.history.pop_front() {
            inner.history_start = old.revision;
        }
    }
    inner.history.push_back(e);
}

fn parse(key: &str, bytes: &[u8]) -> Result<Value, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        key: key.replace('\0', "/"),
        source,
    })
}

fn scan(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    resource: &str,
    namespace: Option<&str>,
) -> Result<Vec<Value>, StoreError> {
    let p = prefix(resource, namespace);
    let end = prefix_end(&p);
    let mut out = Vec::new();
    for item in t.range(p.as_str()..end.as_str())? {
        let (k, v) = item?;
        debug_assert!(Key::decode(k.value()).is_some());
        out.push(parse(k.value(), v.value())?);
    }
    Ok(out)
}

/// Set `metadata.resourceVersion` to `rev`.
pub fn set_resource_version(obj: &mut Value, rev: u64) {
    if let Some(o) = obj.as_object_mut() {
        let meta = o
            .entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(m) = meta.as_object_mut() {
            m.insert("resourceVersion".into(), Value::String(rev.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put(store: &Store, key: &Key, obj: Value) -> Value {
        store
            .transact::<(), ()>(key, |_| Ok(Action::Put(obj, ())))
            .unwrap()
            .unwrap()
            .object
            .unwrap()
    }

    #[test]
    fn key_roundtrip_and_prefix_bounds() {
        let k = Key::new("pods", "default", "web");
        assert_eq!(Key::decode(&k.encode()), Some(k.clone()));
        let p = prefix("pods", Some("default"));
        let end = prefix_end(&p);
        assert!(k.encode().as_str() >= p.as_str() && k.encode() < end);
        // "pods" must not match "podsx".
        let other = Key::new("podsx", "default", "web").encode();
        assert!(
            !(other.as_str() >= prefix("pods", None).as_str()
                && other < prefix_end(&prefix("pods", None)))
        );
    }

    #[test]
    fn revisions_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        {
            let s = Store::open(&path).unwrap();
            let a = put(
                &s,
                &Key::new("pods", "default", "a"),
                json!({"metadata":{"name":"a"}}),
            );
            assert_eq!(a["metadata"]["resourceVersion"], "1");
            put(
                &s,
                &Key::new("pods", "default", "b"),
                json!({"metadata":{"name":"b"}}),
            );
            put(
                &s,
                &Key::new("pods", "other", "c"),
                json!({"metadata":{"name":"c"}}),
            );
            let r = s
                .transact::<(), ()>(&Key::new("pods", "default", "b"), |_| {
                    Ok(Action::Delete(()))
                })
                .unwrap()
                .unwrap();
            assert_eq!(r.object.unwrap()["metadata"]["resourceVersion"], "4");
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.revision(), 4);
        let (items, rev) = s.list("pods", None).unwrap();
        assert_eq!(rev, 4);
        assert_eq!(items.len(), 2);
        let (items, _) = s.list("pods", Some("default")).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["metadata"]["name"], "a");
        let c = put(
            &s,
            &Key::new("pods", "other", "c"),
            json!({"metadata":{"name":"c"}}),
        );
        assert_eq!(c["metadata"]["resourceVersion"], "5");
        // History is empty after reopen: resuming before the reopen revision is too old.
        assert!(matches!(
            s.watch("pods", Some(3)),
            Err(StoreError::Expired { .. })
        ));
        let w = s.watch("pods", Some(4)).unwrap();
        assert_eq!(w.replay.len(), 1);
    }

    #[test]
    fn transact_error_and_nothing_do_not_write() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        let k = Key::new("nodes", "", "n1");
        let r = s.transact::<(), &str>(&k, |_| Err("nope")).unwrap();
        assert!(r.is_err());
        let r = s
            .transact::<(), ()>(&k, |_| Ok(Action::Nothing(())))
            .unwrap()
            .unwrap();
        assert!(!r.written);
        assert_eq!(s.revision(), 0);
    }

    #[test]
    fn watch_replays_and_goes_live() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        put(
            &s,
            &Key::new("pods", "default", "a"),
            json!({"metadata":{"name":"a"}}),
        );
        put(&s, &Key::new("configmaps", "default", "x"), json!({}));
        put(
            &s,
            &Key::new("pods", "default", "a"),
            json!({"metadata":{"name":"a"},"x":1}),
        );
        let w = s.watch("pods", Some(1)).unwrap();
        assert_eq!(w.replay.len(), 1);
        assert_eq!(w.replay[0].kind, EventType::Modified);
        assert_eq!(w.replay[0].revision, 3);
        let mut live = w.live;
        put(
            &s,
            &Key::new("pods", "default", "b"),
            json!({"metadata":{"name":"b"}}),
        );
        let e = live.try_recv().unwrap();
        assert_eq!(e.revision, 4);
        assert_eq!(e.kind, EventType::Added);
        let w = s.watch("pods", None).unwrap();
        assert_eq!(w.initial.len(), 2);
        assert_eq!(w.start_revision, 4);
    }

    #[test]
    fn history_window_expires_old_revisions() {
        let mut inner = Inner {
            revision: 0,
            history_start: 0,
            history: VecDeque::new(),
            tx: broadcast::channel(1).0,
        };
        for r in 1..=(HISTORY_WINDOW as u64 + 5) {
            push_history(
                &mut inner,
                Event {
                    revision: r,
                    kind: EventType::Added,
                    key: Key::new("pods", "", "x"),
                    object: Arc::new(Value::Null),
                    prev: None,
                },
            );
        }
        assert_eq!(inner.history.len(), HISTORY_WINDOW);
        assert_eq!(inner.history_start, 5);
        assert_eq!(inner.history.front().unwrap().revision, 6);
    }
}
