//! The authorization glue inside our API server (I/O): a policy snapshot from the store (cached
//! per store revision), the node graph from the stored pods, the request hook that answers 403
//! like kube-apiserver, the review endpoints, admission (NodeRestriction and RBAC escalation
//! prevention), the bootstrap policy and the ClusterRole aggregation reconciler.
use std::cell::OnceCell;
use std::collections::HashMap;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::node::{self as nodeauth, NodeGraph, Operation, Vertex};
use super::rbac::{self, Policy, RoleRef, Rule};
use super::review::{self, Invalid, Kind};
use super::{node_identity, request, Attributes, Context, Decision, SYSTEM_MASTERS};
use crate::controlplane::apiserver::auth::User;
use crate::controlplane::apiserver::handlers::{blocking, error_response, json_response, Route};
use crate::controlplane::apiserver::resources::{self, ResourceDef};
use crate::controlplane::apiserver::status::{ApiError, Cause};
use crate::controlplane::apiserver::{object, State};
use crate::controlplane::store::{Action, Key, Store};
use crate::streamproxy::Body;

pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

tokio::task_local! {
    /// The authenticated user of the request being handled (unset for internal work such as
    /// the namespace cleanup: no admission checks then).
    pub static REQUEST_USER: User;
}

/// Shared authorization state of the API server: the policy snapshot cache.
#[derive(Default)]
pub struct Authz {
    cache: parking_lot::Mutex<Option<(u64, Arc<Policy>)>>,
}

impl std::fmt::Debug for Authz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authz").finish_non_exhaustive()
    }
}

fn rbac_def(plural: &str) -> &'static ResourceDef {
    resources::find(RBAC_GROUP, "v1", plural).expect("RBAC resources are served")
}

fn list(store: &Store, plural: &str) -> Vec<Value> {
    match store.list(&format!("{plural}.{RBAC_GROUP}"), None) {
        Ok((items, _)) => items,
        Err(e) => {
            tracing::warn!(error = %e, resource = plural, "reading RBAC objects");
            vec![]
        }
    }
}

impl Authz {
    /// The policy at the store's current revision (blocking: call off the async threads).
    pub fn policy(&self, store: &Store) -> Arc<Policy> {
        let rev = store.revision();
        if let Some((r, p)) = &*self.cache.lock() {
            if *r == rev {
                return p.clone();
            }
        }
        let p = Arc::new(Policy::from_objects(
            &list(store, "clusterroles"),
            &list(store, "roles"),
            &list(store, "clusterrolebindings"),
            &list(store, "rolebindings"),
        ));
        *self.cache.lock() = Some((rev, p.clone()));
        p
    }
}

/// [`Context`] over the store, loading the policy and node graphs only when asked.
struct StoreContext<'a> {
    store: &'a Store,
    authz: &'a Authz,
    policy: OnceCell<Arc<Policy>>,
    graphs: std::cell::RefCell<HashMap<String, Arc<NodeGraph>>>,
}

impl<'a> StoreContext<'a> {
    fn new(store: &'a Store, authz: &'a Authz) -> Self {
        StoreContext {
            store,
            authz,
            policy: OnceCell::new(),
            graphs: Default::default(),
        }
    }

    fn graph(&self, node: &str) -> Arc<NodeGraph> {
        if let Some(g) = self.graphs.borrow().get(node) {
            return g.clone();
        }
        let pods: Vec<Value> = match self.store.list("pods", None) {
            Ok((items, _)) => items
                .into_iter()
                .filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "reading pods for the node authorizer");
                vec![]
            }
        };
        let partial = NodeGraph::new(&pods, &[], &[]);
        let get = |resource: &str, ns: &str, name: &str| self.store.get(&Key::new(resource, ns, name)).ok().flatten();
        let pvcs: Vec<Value> = partial
            .pvcs()
            .iter()
            .filter_map(|(ns, n)| get("persistentvolumeclaims", ns, n))
            .collect();
        let pvs: Vec<Value> = pvcs
            .iter()
            .filter_map(|c| c.pointer("/spec/volumeName").and_then(Value::as_str))
            .filter_map(|pv| get("persistentvolumes", "", pv))
            .collect();
        let g = Arc::new(NodeGraph::new(&pods, &pvcs, &pvs));
        self.graphs.borrow_mut().insert(node.to_string(), g.clone());
        g
    }
}

impl Context for StoreContext<'_> {
    fn policy(&self) -> &Policy {
        self.policy.get_or_init(|| self.authz.policy(self.store))
    }
    fn has_path(&self, node: &str, kind: Vertex, namespace: &str, name: &str) -> bool {
        self.graph(node).has_path(kind, namespace, name)
    }
}

/// Authorize `attrs` against the store (async; masters answer without touching the store).
pub async fn authorize(state: &Arc<State>, attrs: Attributes) -> Result<(Decision, String), ApiError> {
    if attrs.user.groups.iter().any(|g| g == SYSTEM_MASTERS) {
        return Ok((Decision::Allow, String::new()));
    }
    let st = state.clone();
    blocking(move || {
        let ctx = StoreContext::new(&st.store, &st.authz);
        super::authorize(&attrs, &ctx)
    })
    .await
}

/// A 403 answered like kube-apiserver.
pub fn forbidden(attrs: &Attributes, reason: &str) -> ApiError {
    let mut e = ApiError::new(403, "Forbidden", super::forbidden_message(attrs, reason));
    let mut d = serde_json::Map::new();
    if !attrs.name.is_empty() {
        d.insert("name".into(), attrs.name.clone().into());
    }
    if !attrs.api_group.is_empty() {
        d.insert("group".into(), attrs.api_group.clone().into());
    }
    if !attrs.resource.is_empty() {
        d.insert("kind".into(), attrs.resource.clone().into());
    }
    e.details = Some(Value::Object(d));
    e
}

/// A 403 of admission (`admission.NewForbidden`): `<resource> "<name>" is forbidden: <why>`.
fn admission_forbidden(group: &str, resource: &str, name: &str, why: &str) -> ApiError {
    let qualified = if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") };
    let message = if name.is_empty() {
        format!("{qualified} is forbidden: {why}")
    } else {
        format!("{qualified} {name:?} is forbidden: {why}")
    };
    let mut e = ApiError::new(403, "Forbidden", message);
    let mut d = json!({"kind": resource});
    if !name.is_empty() {
        d["name"] = name.into();
    }
    if !group.is_empty() {
        d["group"] = group.into();
    }
    e.details = Some(d);
    e
}

/// Impersonation (`Impersonate-User` / `Impersonate-Group` headers, kubectl `--as`/`--as-group`),
/// like kube-apiserver's impersonation filter: `user` must be allowed to `impersonate` each
/// users/groups/serviceaccounts value; the request then runs as the impersonated user (groups as
/// given plus system:authenticated; a service account without groups gets its SA groups).
async fn impersonate(state: &Arc<State>, user: &User, headers: &http::HeaderMap) -> Result<User, ApiError> {
    let values = |h: &str| -> Vec<String> {
        headers.get_all(h).iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect()
    };
    let users = values("impersonate-user");
    let groups = values("impersonate-group");
    if users.is_empty() {
        if groups.is_empty() {
            return Ok(user.clone());
        }
        return Err(ApiError::internal("requested [Impersonate-Group] without impersonating a user"));
    }
    let name = users[0].clone();
    let mut checks: Vec<Attributes> = Vec::new();
    let sa = name.strip_prefix("system:serviceaccount:").and_then(|r| r.split_once(':'));
    checks.push(match sa {
        Some((ns, n)) => Attributes::resource(user.clone(), "impersonate", "", "serviceaccounts", "", ns, n),
        None => Attributes::resource(user.clone(), "impersonate", "", "users", "", "", &name),
    });
    for g in &groups {
        checks.push(Attributes::resource(user.clone(), "impersonate", "", "groups", "", "", g));
    }
    for a in checks {
        let (d, reason) = authorize(state, a.clone()).await?;
        if d != Decision::Allow {
            return Err(forbidden(&a, &reason));
        }
    }
    let mut new_groups = groups;
    if new_groups.is_empty() {
        if let Some((ns, _)) = sa {
            new_groups = vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{ns}")];
        }
    }
    if name != "system:anonymous" && !new_groups.iter().any(|g| g == "system:authenticated") {
        new_groups.push("system:authenticated".into());
    }
    Ok(User { name, groups: new_groups })
}

/// The hook right after authentication: impersonation, then authorize the request (403 when
/// denied), apply the NodeRestriction checks that need only the stored object, and answer the
/// review endpoints. Ok((req, effective user)): continue with the normal handlers.
pub async fn gate(
    state: &Arc<State>,
    user: &User,
    route: &Route,
    req: Request<Incoming>,
) -> Result<(Request<Incoming>, User), Response<Body>> {
    let user = &match impersonate(state, user, req.headers()).await {
        Ok(u) => u,
        Err(e) => return Err(error_response(&e)),
    };
    let attrs = request::attributes(user.clone(), req.method().as_str(), req.uri().path(), req.uri().query());
    let (decision, reason) = match authorize(state, attrs.clone()).await {
        Ok(d) => d,
        Err(e) => return Err(error_response(&e)),
    };
    if decision != Decision::Allow {
        tracing::debug!(user = %user.name, verb = %attrs.verb, resource = %attrs.resource, path = %attrs.path, %reason, "forbidden");
        return Err(error_response(&forbidden(&attrs, &reason)));
    }
    if let Err(e) = node_restriction_stored(state, &attrs).await {
        return Err(error_response(&e));
    }
    if let Route::Resource(t) = route {
        if let Some(kind) = Kind::of(t.def.group, t.def.plural) {
            return Err(match review_endpoint(state, user, kind, t.namespace.as_deref().unwrap_or(""), req).await {
                Ok(r) => r,
                Err(e) => error_response(&e),
            });
        }
    }
    Ok((req, user.clone()))
}

/// NodeRestriction for node users where the stored object decides: modifying another Node,
/// deleting pods or writing pod status of pods not bound to the node.
async fn node_restriction_stored(state: &Arc<State>, a: &Attributes) -> Result<(), ApiError> {
    let Some(node) = node_identity(&a.user) else {
        return Ok(());
    };
    if !a.resource_request || !a.api_group.is_empty() {
        return Ok(());
    }
    let op = match a.verb.as_str() {
        "update" | "patch" => Operation::Update,
        "delete" => Operation::Delete,
        _ => return Ok(()),
    };
    match a.resource.as_str() {
        "nodes" if a.name != node => Err(admission_forbidden(
            "",
            "nodes",
            &a.name,
            &format!("node {node:?} is not allowed to modify node {:?}", a.name),
        )),
        "pods" if (op == Operation::Delete && a.subresource.is_empty()) || a.subresource == "status" => {
            let store = state.store.clone();
            let key = Key::new("pods", &a.namespace, &a.name);
            let Some(pod) = blocking(move || store.get(&key)).await?? else {
                return Ok(()); // the handler answers 404
            };
            match nodeauth::admit(&a.user, op, "", "pods", &a.subresource, &a.name, None, Some(&pod)) {
                Some(why) => Err(admission_forbidden("", "pods", &a.name, &why)),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

fn invalid_to_api(kind: Kind, e: Invalid) -> ApiError {
    match e {
        Invalid::BadRequest(m) => ApiError::bad_request(m),
        Invalid::Field { field, value, detail } => {
            let group = if kind == Kind::SelfSubjectReview { "authentication.k8s.io" } else { "authorization.k8s.io" };
            let mut err = ApiError::new(
                422,
                "Invalid",
                format!("{} is invalid: {field}: Invalid value: {value}: {detail}", kind.name()),
            );
            err.details = Some(json!({"group": group, "kind": kind.name(),
                "causes": [{"reason": "FieldValueInvalid", "message": format!("Invalid value: {value}: {detail}"), "field": field}]}));
            err
        }
    }
}

async fn review_endpoint(
    state: &Arc<State>,
    user: &User,
    kind: Kind,
    namespace: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    use http_body_util::BodyExt;
    if req.method() != http::Method::POST {
        return Err(ApiError::method_not_allowed());
    }
    let ct = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = http_body_util::Limited::new(req.into_body(), 1024 * 1024)
        .collect()
        .await
        .map_err(|e| ApiError::new(413, "RequestEntityTooLarge", format!("reading request body: {e}")))?
        .to_bytes();
    let obj = crate::controlplane::apiserver::handlers::decode_json(&body, &ct)?;
    let st = state.clone();
    let user = user.clone();
    let ns = namespace.to_string();
    let out = blocking(move || {
        let ctx = StoreContext::new(&st.store, &st.authz);
        review::answer(kind, obj, &user, &ns, &ctx)
    })
    .await?
    .map_err(|e| invalid_to_api(kind, e))?;
    Ok(json_response(201, &out))
}

// ---------------------------------------------------------------------------------------------
// Admission in the write handlers.

/// Admission checks prepared before a store transaction (the user and, for RBAC kinds, the
/// policy snapshot), run inside it with the new and old objects.
pub struct Admission {
    user: Option<User>,
    policy: Option<Arc<Policy>>,
    escalate_or_bind: bool,
}

/// Prepare admission for a write to `def` (`name` when known; for bindings the referenced role
/// is only known from the body, so `bind` is authorized in [`Admission::check`] via the policy).
pub async fn admission(state: &Arc<State>, def: &ResourceDef, namespace: &str, name: &str) -> Result<Admission, ApiError> {
    let user = REQUEST_USER.try_with(|u| u.clone()).ok();
    let mut adm = Admission { user, policy: None, escalate_or_bind: false };
    let Some(u) = &adm.user else {
        return Ok(adm);
    };
    if def.group != RBAC_GROUP || u.groups.iter().any(|g| g == SYSTEM_MASTERS) {
        return Ok(adm);
    }
    if def.plural == "roles" || def.plural == "clusterroles" {
        let a = Attributes::resource(u.clone(), "escalate", RBAC_GROUP, def.plural, "", namespace, name);
        adm.escalate_or_bind = authorize(state, a).await?.0 == Decision::Allow;
    }
    let st = state.clone();
    adm.policy = Some(blocking(move || st.authz.policy(&st.store)).await?);
    Ok(adm)
}

fn role_ref_of(v: &Value) -> RoleRef {
    v.get("roleRef").and_then(|r| serde_json::from_value(r.clone()).ok()).unwrap_or_default()
}

/// Minimal RBAC validation (kube's `ValidateRole*`): rules need verbs and either resources with
/// apiGroups or nonResourceURLs (cluster roles only); bindings need a valid roleRef.
fn validate_rbac(def: &ResourceDef, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let name = object::name_of(obj);
    let mut causes = Vec::new();
    match def.plural {
        "roles" | "clusterroles" => {
            for (i, r) in rbac::rules_of(obj).iter().enumerate() {
                if r.verbs.is_empty() {
                    causes.push(Cause::required(format!("rules[{i}].verbs"), "verbs must contain at least one value"));
                }
                if !r.non_resource_urls.is_empty() {
                    if def.plural == "roles" {
                        causes.push(Cause::invalid(format!("rules[{i}].nonResourceURLs"), &json!(r.non_resource_urls), "namespaced rules cannot apply to non-resource URLs"));
                    }
                    if !r.api_groups.is_empty() || !r.resources.is_empty() {
                        causes.push(Cause::invalid(format!("rules[{i}].nonResourceURLs"), &json!(r.non_resource_urls), "rules cannot apply to both regular resources and non-resource URLs"));
                    }
                } else {
                    if r.api_groups.is_empty() {
                        causes.push(Cause::required(format!("rules[{i}].apiGroups"), "resource rules must supply at least one api group"));
                    }
                    if r.resources.is_empty() {
                        causes.push(Cause::required(format!("rules[{i}].resources"), "resource rules must supply at least one resource"));
                    }
                }
            }
        }
        _ => {
            let rr = role_ref_of(obj);
            let supported: &[&str] = if def.plural == "clusterrolebindings" { &["ClusterRole"] } else { &["Role", "ClusterRole"] };
            if rr.api_group != RBAC_GROUP {
                causes.push(Cause::unsupported("roleRef.apiGroup", &json!(rr.api_group), &[RBAC_GROUP]));
            }
            if !supported.contains(&rr.kind.as_str()) {
                causes.push(Cause::unsupported("roleRef.kind", &json!(rr.kind), supported));
            }
            if rr.name.is_empty() {
                causes.push(Cause::required("roleRef.name", ""));
            }
            if let Some(o) = old {
                if role_ref_of(o) != rr {
                    causes.push(Cause::invalid("roleRef", &obj["roleRef"], "cannot change roleRef"));
                }
            }
            for (i, s) in obj.get("subjects").and_then(Value::as_array).into_iter().flatten().enumerate() {
                let k = s.get("kind").and_then(Value::as_str).unwrap_or("");
                if !["User", "Group", "ServiceAccount"].contains(&k) {
                    causes.push(Cause::unsupported(format!("subjects[{i}].kind"), &json!(k), &["ServiceAccount", "User", "Group"]));
                }
                if s.get("name").and_then(Value::as_str).unwrap_or("").is_empty() {
                    causes.push(Cause::required(format!("subjects[{i}].name"), ""));
                }
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(def, name, causes))
    }
}

impl Admission {
    /// Run NodeRestriction and RBAC validation/escalation checks on a create (`old` None) or
    /// update of `new` (a status update when `subresource` is "status").
    pub fn check(&self, def: &ResourceDef, namespace: &str, subresource: &str, new: &Value, old: Option<&Value>) -> Result<(), ApiError> {
        let name = object::name_of(new);
        if def.group == RBAC_GROUP {
            validate_rbac(def, new, old)?;
        }
        let Some(user) = &self.user else {
            return Ok(());
        };
        let op = if old.is_some() { Operation::Update } else { Operation::Create };
        if let Some(why) = nodeauth::admit(user, op, def.group, def.plural, subresource, name, Some(new), old) {
            return Err(admission_forbidden(def.group, def.plural, name, &why));
        }
        let Some(policy) = &self.policy else {
            return Ok(());
        };
        let forbid = |msg: String| admission_forbidden(def.group, def.plural, name, &msg);
        match def.plural {
            "roles" | "clusterroles" => {
                if self.escalate_or_bind {
                    return Ok(());
                }
                let unchanged = old.is_some_and(|o| rbac::rules_of(o) == rbac::rules_of(new) && o.get("aggregationRule") == new.get("aggregationRule"));
                if unchanged {
                    return Ok(());
                }
                let (owner, errors) = policy.rules_for(user, namespace);
                if let Err(missing) = rbac::covers(&owner, &rbac::rules_of(new)) {
                    return Err(forbid(rbac::escalation_message(user, &missing, &errors)));
                }
                if def.plural == "clusterroles" && rbac::aggregation_selectors(new).is_some() {
                    let full = [Rule::res(&["*"], &["*"], &["*"]), Rule::urls(&["*"], &["*"])];
                    if rbac::covers(&owner, &full).is_err() {
                        return Err(forbid("must have cluster-admin privileges to write aggregated cluster roles".into()));
                    }
                }
                Ok(())
            }
            "rolebindings" | "clusterrolebindings" => {
                let rr = role_ref_of(new);
                if old.is_some_and(|o| role_ref_of(o) == rr) && old.map(|o| &o["subjects"]) == Some(&new["subjects"]) {
                    return Ok(());
                }
                let role_plural = if rr.kind == "Role" { "roles" } else { "clusterroles" };
                let bind = Attributes::resource(user.clone(), "bind", RBAC_GROUP, role_plural, "", namespace, &rr.name);
                if rbac::authorize(&bind, policy).0 == Decision::Allow {
                    return Ok(());
                }
                let rules = policy
                    .role_rules(&rr, namespace)
                    .map_err(|_| ApiError::not_found(rbac_def(role_plural), &rr.name))?;
                let (owner, errors) = policy.rules_for(user, namespace);
                if let Err(missing) = rbac::covers(&owner, rules) {
                    return Err(forbid(rbac::escalation_message(user, &missing, &errors)));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bootstrap policy and aggregation.

/// Create the bootstrap roles and bindings that do not exist yet, then fill aggregated roles.
/// Blocking.
pub fn ensure_bootstrap_policy(store: &Store) -> anyhow::Result<()> {
    let (roles, role_bindings) = super::bootstrap::namespaced();
    let sets: [(&str, Vec<Value>); 4] = [
        ("clusterroles", super::bootstrap::cluster_roles()),
        ("clusterrolebindings", super::bootstrap::cluster_role_bindings()),
        ("roles", roles),
        ("rolebindings", role_bindings),
    ];
    let now = object::now_rfc3339();
    for (plural, objs) in sets {
        let def = rbac_def(plural);
        for mut obj in objs {
            let ns = object::namespace_of(&obj).to_string();
            let key = def.key(&ns, object::name_of(&obj));
            object::prepare_create(def, &mut obj, &ns, &now)
                .map_err(|e| anyhow::anyhow!("bootstrap {plural} {}: {e}", object::name_of(&obj)))?;
            store
                .transact::<(), std::convert::Infallible>(&key, |cur| {
                    Ok(if cur.is_some() { Action::Nothing(()) } else { Action::Put(obj, ()) })
                })?
                .expect("infallible");
        }
    }
    reconcile_aggregation(store)?;
    Ok(())
}

/// The clusterrole-aggregation controller's pass: write the aggregated rules into every
/// ClusterRole with an aggregationRule whose stored rules differ. Blocking.
pub fn reconcile_aggregation(store: &Store) -> anyhow::Result<usize> {
    let def = rbac_def("clusterroles");
    let roles = list(store, "clusterroles");
    let effective = rbac::aggregate(&roles);
    let mut written = 0;
    for r in roles.iter().filter(|r| rbac::aggregation_selectors(r).is_some()) {
        let name = object::name_of(r).to_string();
        let want = effective.get(&name).cloned().unwrap_or_default();
        if rbac::rules_of(r) == want {
            continue;
        }
        let key = def.key("", &name);
        let changed = store
            .transact::<bool, std::convert::Infallible>(&key, |cur| {
                let Some(cur) = cur else { return Ok(Action::Nothing(false)) };
                if rbac::rules_of(cur) == want {
                    return Ok(Action::Nothing(false));
                }
                let mut o = cur.clone();
                o["rules"] = serde_json::to_value(&want).expect("rules serialize");
                Ok(Action::Put(o, true))
            })?
            .expect("infallible");
        if changed.value {
            written += 1;
        }
    }
    Ok(written)
}

/// After a request: when a ClusterRole was written, run the aggregation pass (in the background).
pub fn after_request(state: &Arc<State>, method: &http::Method, path: &str, status: u16) {
    if !(200..300).contains(&status) || *method == http::Method::GET || !path.contains("/rbac.authorization.k8s.io/v1/clusterroles") {
        return;
    }
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = reconcile_aggregation(&st.store) {
            tracing::warn!(error = %e, "ClusterRole aggregation");
        }
    });
}
