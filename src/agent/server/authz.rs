//! Authorization of the kubelet API like kubelet's webhook mode (pkg/kubelet/server/auth.go and
//! the delegating authorizer): each client-certificate user's request becomes `nodes/<sub>`
//! attributes on this node, asked of the API server with a SubjectAccessReview; answers are
//! cached (allowed 5 min, denied 30 s: kubelet's `cacheAuthorizedTTL`/`cacheUnauthorizedTTL`).
//!
//! Verb from the HTTP method (POST create, GET get, PUT update, PATCH patch, DELETE delete);
//! subresource from the path: /stats stats, /metrics metrics, /logs log, /spec spec, /checkpoint
//! checkpoint, with KubeletFineGrainedAuthz /healthz healthz, /pods pods, /configz configz (each
//! falling back to proxy), everything else (containerLogs, exec, attach, portForward, run) proxy.
//! `system:masters` users (the API server's kubelet client) are allowed without asking: the API
//! server's privileged-group authorizer allows them unconditionally.
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use std::time::Instant;

use crate::controlplane::apiserver::auth::User;

/// kubelet's default `authorization.webhook.cacheAuthorizedTTL`.
pub const ALLOWED_TTL: Duration = Duration::from_secs(300);
/// kubelet's default `authorization.webhook.cacheUnauthorizedTTL`.
pub const DENIED_TTL: Duration = Duration::from_secs(30);

/// The verb of a kubelet API request (`GetRequestAttributes`).
pub fn verb(method: &str) -> &'static str {
    match method {
        "POST" => "create",
        "GET" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "",
    }
}

fn is_subpath(path: &str, base: &str) -> bool {
    path == base || path.starts_with(&format!("{base}/"))
}

/// The `nodes` subresources to try for `path`, in order (any allowed one admits the request).
pub fn subresources(path: &str) -> Vec<&'static str> {
    for (base, sub) in [
        ("/stats", "stats"),
        ("/metrics", "metrics"),
        ("/logs", "log"),
        ("/spec", "spec"),
        ("/checkpoint", "checkpoint"),
    ] {
        if is_subpath(path, base) {
            return vec![sub];
        }
    }
    for (base, sub) in [("/healthz", "healthz"), ("/pods", "pods"), ("/configz", "configz")] {
        if is_subpath(path, base) {
            return vec![sub, "proxy"];
        }
    }
    vec!["proxy"]
}

/// The SubjectAccessReview kubelet sends for one attribute set.
pub fn review_body(user: &User, verb: &str, subresource: &str, node: &str) -> Value {
    json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user.name,
            "groups": user.groups,
            "resourceAttributes": {
                "verb": verb, "group": "", "version": "v1", "resource": "nodes",
                "subresource": subresource, "name": node,
            },
        },
    })
}

/// The 403 text kubelet answers.
pub fn forbidden_text(user: &User, verb: &str, subs: &[&str]) -> String {
    format!(
        "Forbidden (user={}, verb={verb}, resource=nodes, subresource(s)=[{}])\n",
        user.name,
        subs.join(" ")
    )
}

/// Posts a SubjectAccessReview and returns the answered object.
pub type Reviewer = Arc<dyn Fn(Value) -> Pin<Box<dyn Future<Output = Result<Value, String>> + Send>> + Send + Sync>;

/// A reviewer over the agent's API client (POST /apis/authorization.k8s.io/v1/subjectaccessreviews).
pub fn api_reviewer(client: kube::Client) -> Reviewer {
    Arc::new(move |body: Value| {
        let client = client.clone();
        Box::pin(async move {
            let req = http::Request::post("/apis/authorization.k8s.io/v1/subjectaccessreviews")
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(&body).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            client.request::<Value>(req).await.map_err(|e| e.to_string())
        })
    })
}

type CacheKey = (String, Vec<String>, String, String);

/// The kubelet API's authorizer.
pub struct Authorizer {
    node: String,
    reviewer: Option<Reviewer>,
    cache: parking_lot::Mutex<HashMap<CacheKey, (bool, Instant)>>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").field("node", &self.node).finish_non_exhaustive()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no user.
    Unauthorized,
    /// 403 with kubelet's text.
    Forbidden(String),
    /// 500: the review could not be made.
    Error(String),
}

impl Authorizer {
    /// `reviewer` None: only `system:masters` users are allowed (no API client).
    pub fn new(node: &str, reviewer: Option<Reviewer>) -> Authorizer {
        Authorizer { node: node.into(), reviewer, cache: Default::default() }
    }

    async fn allowed(&self, user: &User, verb: &str, sub: &str, now: Instant) -> Result<bool, String> {
        let key = (user.name.clone(), user.groups.clone(), verb.to_string(), sub.to_string());
        if let Some((ok, until)) = self.cache.lock().get(&key) {
            if *until > now {
                return Ok(*ok);
            }
        }
        let Some(reviewer) = &self.reviewer else {
            return Ok(false);
        };
        let answer = reviewer(review_body(user, verb, sub, &self.node)).await?;
        let ok = answer.pointer("/status/allowed").and_then(Value::as_bool).unwrap_or(false);
        let ttl = if ok { ALLOWED_TTL } else { DENIED_TTL };
        let mut cache = self.cache.lock();
        cache.retain(|_, (_, until)| *until > now);
        cache.insert(key, (ok, now + ttl));
        Ok(ok)
    }

    /// Authorize a request of `user` (None: no client certificate user).
    pub async fn authorize(&self, user: Option<&User>, method: &str, path: &str) -> Result<(), Refusal> {
        self.authorize_at(user, method, path, Instant::now()).await
    }

    /// [`Authorizer::authorize`] at time `now` (for the cache's expiry).
    pub async fn authorize_at(&self, user: Option<&User>, method: &str, path: &str, now: Instant) -> Result<(), Refusal> {
        let Some(user) = user else {
            return Err(Refusal::Unauthorized);
        };
        if user.groups.iter().any(|g| g == crate::controlplane::auth::SYSTEM_MASTERS) {
            return Ok(());
        }
        let verb = verb(method);
        let subs = subresources(path);
        for sub in &subs {
            match self.allowed(user, verb, sub, now).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(user = %user.name, error = %e, "kubelet API SubjectAccessReview failed");
                    return Err(Refusal::Error(format!("Authorization error (user={}, verb={verb}, resource=nodes, subresource={sub})", user.name)));
                }
            }
        }
        Err(Refusal::Forbidden(forbidden_text(user, verb, &subs)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn u(name: &str, groups: &[&str]) -> User {
        User { name: name.into(), groups: groups.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn kubelet_attribute_mapping() {
        assert_eq!(verb("POST"), "create");
        assert_eq!(verb("GET"), "get");
        assert_eq!(verb("HEAD"), "");
        assert_eq!(subresources("/exec/ns/p/c"), ["proxy"]);
        assert_eq!(subresources("/containerLogs/ns/p/c"), ["proxy"]);
        assert_eq!(subresources("/stats/summary"), ["stats"]);
        assert_eq!(subresources("/metrics/cadvisor"), ["metrics"]);
        assert_eq!(subresources("/logs/syslog"), ["log"]);
        assert_eq!(subresources("/healthz"), ["healthz", "proxy"]);
        assert_eq!(subresources("/pods"), ["pods", "proxy"]);
        assert_eq!(subresources("/statsx"), ["proxy"]);
        let b = review_body(&u("x", &["g"]), "create", "proxy", "n1");
        assert_eq!(b["spec"]["resourceAttributes"]["name"], "n1");
        assert_eq!(b["spec"]["groups"], json!(["g"]));
        assert_eq!(
            forbidden_text(&u("x", &[]), "get", &["healthz", "proxy"]),
            "Forbidden (user=x, verb=get, resource=nodes, subresource(s)=[healthz proxy])\n"
        );
    }

    #[tokio::test]
    async fn reviews_are_cached_for_their_ttl() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let reviewer: Reviewer = Arc::new(move |body: Value| {
            c.fetch_add(1, Ordering::SeqCst);
            let allowed = body["spec"]["user"] == "ok" || body["spec"]["resourceAttributes"]["subresource"] == "healthz";
            Box::pin(async move { Ok(json!({"status": {"allowed": allowed}})) })
        });
        let a = Authorizer::new("n1", Some(reviewer));
        let t0 = Instant::now();
        let ok = u("ok", &[]);
        let bad = u("bad", &[]);
        assert_eq!(a.authorize_at(Some(&ok), "POST", "/exec/d/p/c", t0).await, Ok(()));
        assert_eq!(a.authorize_at(Some(&ok), "POST", "/exec/d/p/c", t0).await, Ok(()));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "cached");
        assert_eq!(
            a.authorize_at(Some(&bad), "POST", "/exec/d/p/c", t0).await,
            Err(Refusal::Forbidden(forbidden_text(&bad, "create", &["proxy"])))
        );
        assert_eq!(a.authorize_at(Some(&bad), "GET", "/healthz", t0).await, Ok(()), "fine-grained healthz");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(a.authorize_at(Some(&bad), "POST", "/exec/d/p/c", t0).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3, "denials are cached too");
        let t1 = t0 + DENIED_TTL + Duration::from_secs(1);
        assert!(a.authorize_at(Some(&bad), "POST", "/exec/d/p/c", t1).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 4, "denial expired after 30 s");
        assert_eq!(a.authorize_at(Some(&ok), "POST", "/exec/d/p/c", t1).await, Ok(()));
        assert_eq!(calls.load(Ordering::SeqCst), 4, "allowed answers live 5 min");
        let masters = u("kube-apiserver-kubelet-client", &["system:masters"]);
        assert_eq!(Authorizer::new("n1", None).authorize(Some(&masters), "POST", "/exec/d/p/c").await, Ok(()));
        assert_eq!(Authorizer::new("n1", None).authorize(None, "GET", "/healthz").await, Err(Refusal::Unauthorized));
        assert!(Authorizer::new("n1", None).authorize(Some(&ok), "GET", "/healthz").await.is_err());
    }
}
