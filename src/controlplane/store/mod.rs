//! Embedded persistent object store for the API server (redb).
//!
//! Objects are JSON documents keyed by (resource, namespace, name), where `resource` is the
//! group-qualified plural (`pods`, `leases.coordination.k8s.io`). One global revision counter is
//! bumped by every write and persisted in the same redb transaction as the object; an object's
//! `metadata.resourceVersion` is the revision of its last write. Every acknowledged write is
//! committed (redb's default `Durability::Immediate`, i.e. fsync'd).
//!
//! Limits: a stored object may be at most [`MAX_OBJECT_BYTES`] (1.5 MiB, etcd's default
//! `--max-request-bytes`) of JSON; larger writes fail with [`StoreError::TooLarge`].
//!
//! Watch: writes append to an in-memory history window, bounded both in events
//! ([`HISTORY_WINDOW`]) and in bytes ([`HISTORY_MAX_BYTES`], object and previous object counted);
//! the oldest events are evicted first. Watchers are woken through a revision channel and read
//! the events after their last revision from the window ([`Store::events_after`]), so no event is
//! held anywhere but in the window. A watch resumes from a revision if every event after it is
//! still in the window, else it fails with [`StoreError::Expired`] (the API server's 410 Gone).
//! After a restart the window is empty and starts at the persisted revision.
//!
//! Robustness: the writer lock is a `parking_lot` mutex (no poisoning) and the caller's decision
//! closure runs under `catch_unwind`: a panic in it aborts that one transaction (nothing is
//! committed) and is answered as [`StoreError::Panicked`]; the store stays usable.
//!
//! Secrets at rest: the file is created 0600 and its directory 0700 (existing modes are fixed at
//! open). With an [`encryption::EncryptionConfig`], values of the configured resources are
//! encrypted before they reach redb.
//!
//! The store is synchronous (redb is); the API server calls it from `spawn_blocking`.
pub mod encryption;

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redb::{ReadableTable, TableDefinition};
use serde_json::Value;
use tokio::sync::watch as notify;

use encryption::{EncryptionConfig, EncryptionError};

/// How many recent events the watch history keeps at most.
pub const HISTORY_WINDOW: usize = 10_000;
/// How many bytes (JSON of object + previous object) the watch history keeps at most.
pub const HISTORY_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Largest stored object (JSON bytes): etcd's default request limit, 1.5 MiB.
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION_KEY: &str = "revision";

/// The last committed revision as persisted in the meta table (0 in a new store).
fn stored_revision(meta: &impl ReadableTable<&'static str, u64>) -> Result<u64, StoreError> {
    Ok(meta.get(REVISION_KEY)?.map(|g| g.value()).unwrap_or(0))
}

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
    /// The object is larger than [`MAX_OBJECT_BYTES`]; etcd's own message.
    #[error("etcdserver: request is too large")]
    TooLarge { size: usize },
    #[error("request handler panicked: {0}")]
    Panicked(String),
    #[error("object {key}: {source}")]
    Encryption {
        key: String,
        source: EncryptionError,
    },
    #[error("setting permissions of {path}: {source}")]
    Permissions {
        path: String,
        source: std::io::Error,
    },
    #[error("store writer is busy for more than {0:?}")]
    Busy(Duration),
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

/// The watch history window.
struct History {
    /// Events with revision > `start` are all in `events`.
    start: u64,
    /// Events in revision order, with their accounted size.
    events: VecDeque<(Event, usize)>,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
}

impl History {
    fn new(start: u64, max_events: usize, max_bytes: usize) -> History {
        History {
            start,
            events: VecDeque::new(),
            bytes: 0,
            max_events,
            max_bytes,
        }
    }

    /// Append `e` (accounted as `size` bytes), evicting the oldest events past either bound.
    fn push(&mut self, e: Event, size: usize) {
        self.bytes += size;
        self.events.push_back((e, size));
        while self.events.len() > self.max_events
            || (self.bytes > self.max_bytes && self.events.len() > 1)
        {
            let Some((old, sz)) = self.events.pop_front() else {
                break;
            };
            self.bytes -= sz;
            self.start = old.revision;
        }
    }

    /// The events of `resource` after revision `rev`, and the newest revision they cover (the
    /// window's head), or Expired when some are gone.
    fn after(&self, resource: &str, rev: u64) -> Result<(Vec<Event>, u64), StoreError> {
        if rev < self.start {
            return Err(StoreError::Expired {
                requested: rev,
                oldest: self.start,
            });
        }
        let newer = self.events.partition_point(|(e, _)| e.revision <= rev);
        let head = self.events.back().map_or(rev, |(e, _)| e.revision.max(rev));
        let events = self
            .events
            .range(newer..)
            .filter(|(e, _)| e.key.resource == resource)
            .map(|(e, _)| e.clone())
            .collect();
        Ok((events, head))
    }
}

/// The store; cheap to share behind an `Arc`.
pub struct Store {
    db: redb::Database,
    /// The writer lock, held through commit; guards the revision counter.
    writer: Mutex<u64>,
    history: Mutex<History>,
    /// The latest committed revision, for waking watchers.
    notify: notify::Sender<u64>,
    encryption: Option<Arc<EncryptionConfig>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// A watch: the events to replay, then the live revision channel.
pub struct Watch {
    /// For a watch from "now" (no revision): the current objects, to be sent as ADDED.
    pub initial: Vec<Value>,
    /// Revision the initial state / replay corresponds to.
    pub start_revision: u64,
    /// Past events after the requested revision.
    pub replay: Vec<Event>,
    /// Changes when a write commits: then read [`Store::events_after`] the last seen revision.
    pub live: notify::Receiver<u64>,
}

/// Restrict `path` to `mode`.
fn chmod(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        StoreError::Permissions {
            path: path.display().to_string(),
            source,
        }
    })
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

impl Store {
    /// Open (or create) the store at `path`, values in plaintext.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, None)
    }

    /// Open (or create) the store at `path`; `encryption` transforms values at rest.
    pub fn open_with(
        path: &Path,
        encryption: Option<Arc<EncryptionConfig>>,
    ) -> Result<Store, StoreError> {
        Self::open_bounded(path, encryption, HISTORY_WINDOW, HISTORY_MAX_BYTES)
    }

    fn open_bounded(
        path: &Path,
        encryption: Option<Arc<EncryptionConfig>>,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Permissions {
                path: dir.display().to_string(),
                source,
            })?;
            chmod(dir, 0o700)?;
        }
        let db = redb::Database::create(path)?;
        chmod(path, 0o600)?;
        let txn = db.begin_write()?;
        let revision = {
            let _ = txn.open_table(OBJECTS)?;
            stored_revision(&txn.open_table(META)?)?
        };
        txn.commit()?;
        let (notify, _) = notify::channel(revision);
        Ok(Store {
            db,
            writer: Mutex::new(revision),
            history: Mutex::new(History::new(revision, max_events, max_bytes)),
            notify,
            encryption,
        })
    }

    /// The current (committed) revision.
    pub fn revision(&self) -> u64 {
        *self.notify.borrow()
    }

    /// A readiness probe: a read transaction reads the persisted revision, and the writer lock
    /// is free within `timeout` (no write is wedged).
    pub fn probe(&self, timeout: Duration) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let rev = stored_revision(&txn.open_table(META)?)?;
        let _ = txn.open_table(OBJECTS)?;
        drop(txn);
        match self.writer.try_lock_for(timeout) {
            Some(_) => Ok(rev),
            None => Err(StoreError::Busy(timeout)),
        }
    }

    fn decode(&self, key: &str, bytes: &[u8]) -> Result<Value, StoreError> {
        match &self.encryption {
            Some(enc) => {
                let resource = key.split('\0').next().unwrap_or("");
                let plain = enc
                    .decrypt(resource, bytes)
                    .map_err(|source| StoreError::Encryption {
                        key: key.replace('\0', "/"),
                        source,
                    })?;
                parse(key, &plain)
            }
            None => parse(key, bytes),
        }
    }

    /// Read one object.
    pub fn get(&self, key: &Key) -> Result<Option<Value>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(OBJECTS)?;
        let k = key.encode();
        match t.get(k.as_str())? {
            None => Ok(None),
            Some(v) => Ok(Some(self.decode(&k, v.value())?)),
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
        let rev = stored_revision(&txn.open_table(META)?)?;
        let t = txn.open_table(OBJECTS)?;
        let out = self.scan(&t, resource, namespace)?;
        Ok((out, rev))
    }

    /// Atomically read the current object at `key`, let `f` decide, and apply its decision with
    /// a new revision. `f` runs under the store's write lock: keep it short and pure. A panic in
    /// `f` aborts the transaction and is returned as [`StoreError::Panicked`].
    pub fn transact<T, E>(
        &self,
        key: &Key,
        f: impl FnOnce(Option<&Value>) -> Result<Action<T>, E>,
    ) -> Result<Result<Outcome<T>, E>, StoreError> {
        let mut revision = self.writer.lock();
        let txn = self.db.begin_write()?;
        let k = key.encode();
        let event;
        let outcome;
        let size;
        {
            let mut t = txn.open_table(OBJECTS)?;
            let (current, current_len) = match t.get(k.as_str())? {
                None => (None, 0),
                Some(v) => (Some(self.decode(&k, v.value())?), v.value().len()),
            };
            let action = match catch_unwind(AssertUnwindSafe(|| f(current.as_ref()))) {
                Ok(Ok(a)) => a,
                Ok(Err(e)) => return Ok(Err(e)),
                Err(p) => {
                    let msg = panic_message(p.as_ref());
                    tracing::error!(key = %k.replace('\0', "/"), panic = %msg, "store transaction panicked; aborted");
                    return Err(StoreError::Panicked(msg));
                }
            };
            let rev = *revision + 1;
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
                    if bytes.len() > MAX_OBJECT_BYTES {
                        return Err(StoreError::TooLarge { size: bytes.len() });
                    }
                    let stored = match &self.encryption {
                        Some(enc) => enc.encrypt(&key.resource, &bytes),
                        None => bytes.clone(),
                    };
                    t.insert(k.as_str(), stored.as_slice())?;
                    let kind = if current.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    };
                    size = bytes.len() + current_len;
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
                    size = 2 * current_len;
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
        *revision = event.revision;
        let rev = event.revision;
        self.history.lock().push(event, size);
        self.notify.send_replace(rev);
        drop(revision);
        Ok(Ok(outcome))
    }

    /// The events of `resource` after revision `rev` (from the history window) and the revision
    /// the caller has then seen everything up to, or [`StoreError::Expired`] when the window no
    /// longer reaches back to `rev`. Never blocks on writers: cheap enough for async code.
    pub fn events_after(&self, resource: &str, rev: u64) -> Result<(Vec<Event>, u64), StoreError> {
        self.history.lock().after(resource, rev)
    }

    /// Start a watch of `resource` (namespace filtering is the caller's). `from`: None = start now
    /// with the current objects as `initial`; Some(rev) = every event after `rev`.
    pub fn watch(&self, resource: &str, from: Option<u64>) -> Result<Watch, StoreError> {
        match from {
            None => {
                // Writers hold `writer` through commit, so a read transaction begun under it is a
                // snapshot at that revision; the scan itself then runs without blocking writers.
                let guard = self.writer.lock();
                let txn = self.db.begin_read()?;
                let start_revision = *guard;
                let live = self.notify.subscribe();
                drop(guard);
                let t = txn.open_table(OBJECTS)?;
                let initial = self.scan(&t, resource, None)?;
                Ok(Watch {
                    initial,
                    start_revision,
                    replay: vec![],
                    live,
                })
            }
            Some(rev) => {
                let live = self.notify.subscribe();
                let current = *live.borrow();
                let (replay, _) = self.events_after(resource, rev)?;
                Ok(Watch {
                    initial: vec![],
                    start_revision: rev.min(current),
                    replay,
                    live,
                })
            }
        }
    }

    fn scan(
        &self,
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
            out.push(self.decode(k.value(), v.value())?);
        }
        Ok(out)
    }
}

fn parse(key: &str, bytes: &[u8]) -> Result<Value, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        key: key.replace('\0', "/"),
        source,
    })
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
        assert!(!live.has_changed().unwrap());
        put(
            &s,
            &Key::new("pods", "default", "b"),
            json!({"metadata":{"name":"b"}}),
        );
        assert!(live.has_changed().unwrap());
        assert_eq!(*live.borrow_and_update(), 4);
        let (es, head) = s.events_after("pods", 3).unwrap();
        assert_eq!(head, 4);
        assert_eq!(es.len(), 1);
        assert_eq!(es[0].revision, 4);
        assert_eq!(es[0].kind, EventType::Added);
        let (es, head) = s.events_after("configmaps", 3).unwrap();
        assert!(es.is_empty() && head == 4);
        let w = s.watch("pods", None).unwrap();
        assert_eq!(w.initial.len(), 2);
        assert_eq!(w.start_revision, 4);
    }

    fn ev(r: u64) -> Event {
        Event {
            revision: r,
            kind: EventType::Added,
            key: Key::new("pods", "", "x"),
            object: Arc::new(Value::Null),
            prev: None,
        }
    }

    #[test]
    fn history_window_expires_old_revisions() {
        let mut h = History::new(0, HISTORY_WINDOW, HISTORY_MAX_BYTES);
        for r in 1..=(HISTORY_WINDOW as u64 + 5) {
            h.push(ev(r), 10);
        }
        assert_eq!(h.events.len(), HISTORY_WINDOW);
        assert_eq!(h.start, 5);
        assert_eq!(h.events.front().unwrap().0.revision, 6);
        assert!(matches!(h.after("pods", 4), Err(StoreError::Expired { requested: 4, oldest: 5 })));
        assert_eq!(h.after("pods", 5).unwrap().0.len(), HISTORY_WINDOW);
        let (es, head) = h.after("pods", HISTORY_WINDOW as u64 + 3).unwrap();
        assert_eq!((es.len(), head), (2, HISTORY_WINDOW as u64 + 5));
        // Nothing of another resource: the caller still advances to the head.
        assert_eq!(h.after("nodes", 7).unwrap().1, HISTORY_WINDOW as u64 + 5);
    }

    #[test]
    fn history_is_bounded_in_bytes() {
        let mut h = History::new(0, 100, 1000);
        for r in 1..=10 {
            h.push(ev(r), 300);
        }
        // 3 events of 300 fit in 1000 bytes; the oldest are evicted first.
        assert_eq!(h.events.len(), 3);
        assert_eq!(h.bytes, 900);
        assert_eq!(h.start, 7);
        assert!(h.after("pods", 6).is_err());
        // One event larger than the budget is kept alone (a watcher can still see it).
        h.push(ev(11), 5000);
        assert_eq!(h.events.len(), 1);
        assert_eq!(h.start, 10);
    }

    #[test]
    fn large_objects_are_rejected_and_history_bytes_bound_holds() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_bounded(&dir.path().join("s.redb"), None, 10_000, 4 << 20).unwrap();
        let k = Key::new("configmaps", "default", "big");
        let big = "x".repeat(MAX_OBJECT_BYTES);
        let r = s.transact::<(), ()>(&k, |_| Ok(Action::Put(json!({"data": {"a": big}}), ())));
        assert!(matches!(r, Err(StoreError::TooLarge { .. })), "{r:?}");
        assert_eq!(s.revision(), 0);
        assert!(s.get(&k).unwrap().is_none());
        let obj = json!({"data": {"a": "y".repeat(1024 * 1024)}});
        for _ in 0..20 {
            put(&s, &k, obj.clone());
        }
        let h = s.history.lock();
        assert!(h.bytes <= 4 << 20, "{}", h.bytes);
        assert!(h.events.len() < 20);
    }

    #[test]
    fn a_panicking_transaction_aborts_alone() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        let k = Key::new("pods", "default", "p");
        put(&s, &k, json!({"metadata":{"name":"p"}}));
        let r = s.transact::<(), ()>(&k, |_| {
            let secs: Vec<i64> = vec![i64::MAX, 1];
            // An arithmetic overflow, as a bug in a request path would panic.
            let total = secs.iter().try_fold(0i64, |a, x| a.checked_add(*x)).expect("overflow");
            assert!(total > 0);
            Ok(Action::Delete(()))
        });
        assert!(matches!(r, Err(StoreError::Panicked(ref m)) if m == "overflow"), "{r:?}");
        // Nothing was committed, and the store keeps working (no poisoned lock).
        assert_eq!(s.revision(), 1);
        assert!(s.get(&k).unwrap().is_some());
        put(&s, &k, json!({"metadata":{"name":"p"},"x":1}));
        assert_eq!(s.revision(), 2);
        assert_eq!(s.probe(Duration::from_secs(1)).unwrap(), 2);
        assert!(s.watch("pods", Some(1)).is_ok());
    }

    #[test]
    fn modes_and_encryption_at_rest() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = state.join("store.redb");
        let cfg = EncryptionConfig::parse(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - secretbox:\n      keys:\n      - name: k1\n        secret: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n  - identity: {}\n",
        )
        .unwrap();
        {
            let plain = Store::open(&path).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            put(&plain, &Key::new("secrets", "default", "old"), json!({"data": {"k": "T0xEUExBSU4="}}));
        }
        let s = Store::open_with(&path, Some(Arc::new(cfg))).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&state), 0o700);
        let marker = "c3VwZXJzZWNyZXRtYXJrZXI=";
        put(&s, &Key::new("secrets", "default", "new"), json!({"data": {"k": marker}}));
        put(&s, &Key::new("configmaps", "default", "cm"), json!({"data": {"k": "visible-config"}}));
        // Reads decrypt; values written before encryption still read through identity.
        let got = s.get(&Key::new("secrets", "default", "new")).unwrap().unwrap();
        assert_eq!(got["data"]["k"], marker);
        assert_eq!(s.list("secrets", None).unwrap().0.len(), 2);
        drop(s);
        let raw = std::fs::read(&path).unwrap();
        let has = |needle: &str| raw.windows(needle.len()).any(|w| w == needle.as_bytes());
        assert!(!has(marker), "the store file holds the secret in plaintext");
        assert!(has("k8s:enc:secretbox:v1:k1:"));
        assert!(has("visible-config"));
        // Without the key, the value cannot be read.
        let s = Store::open(&path).unwrap();
        assert!(s.get(&Key::new("secrets", "default", "new")).is_err());
    }
}
