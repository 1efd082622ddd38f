//! Pod subresources served by the kubelet: log, exec, attach, portforward.
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::Value;
use tracing::debug;

use super::handlers::{blocking, Query};
use super::resources::{self, ResourceDef, Sub};
use super::status::ApiError;
use super::State;
use crate::streamproxy::Body;

/// Pick the container: the named one, or the only one (kube: "a container name must be specified").
pub(crate) fn pick_container(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let names: Vec<&str> = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .filter_map(|k| pod.pointer(&format!("/spec/{k}")).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    match requested.filter(|c| !c.is_empty()) {
        Some(c) if names.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None => {
            let main: Vec<&str> = pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map(|cs| {
                    cs.iter()
                        .filter_map(|c| c.get("name").and_then(Value::as_str))
                        .collect()
                })
                .unwrap_or_default();
            if main.len() == 1 {
                Ok(main[0].to_string())
            } else {
                Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    main.join(" ")
                )))
            }
        }
    }
}

/// The kubelet's address (`host:port`) from a Node: InternalIP (else the first address) and
/// daemonEndpoints.kubeletEndpoint.Port (default 10250).
pub(crate) fn kubelet_address(node: &Value) -> Option<String> {
    let addrs = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)?;
    let pick = |ty: &str| {
        addrs
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) == Some(ty))
    };
    let addr = pick("InternalIP")
        .or_else(|| addrs.first())?
        .get("address")?
        .as_str()?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .unwrap_or(10250);
    Some(if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    })
}

/// The kubelet path and query for a subresource request (kube-apiserver's translation).
pub(crate) fn kubelet_path(sub: Sub, ns: &str, pod: &str, container: &str, q: &Query) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    let path = match sub {
        Sub::Log => {
            for k in ["follow", "previous", "timestamps"] {
                if q.flag(k) {
                    out.append_pair(k, "true");
                }
            }
            for k in ["tailLines", "sinceSeconds", "limitBytes", "sinceTime"] {
                if let Some(v) = q.get(k) {
                    out.append_pair(k, v);
                }
            }
            format!("/containerLogs/{ns}/{pod}/{container}")
        }
        Sub::Exec | Sub::Attach => {
            for (from, to) in [
                ("stdin", "input"),
                ("stdout", "output"),
                ("stderr", "error"),
                ("tty", "tty"),
            ] {
                if q.flag(from) {
                    out.append_pair(to, "1");
                }
            }
            if sub == Sub::Exec {
                for c in q.all("command") {
                    out.append_pair("command", c);
                }
                format!("/exec/{ns}/{pod}/{container}")
            } else {
                format!("/attach/{ns}/{pod}/{container}")
            }
        }
        Sub::PortForward => {
            for p in q.all("ports") {
                out.append_pair("port", p);
            }
            format!("/portForward/{ns}/{pod}")
        }
        Sub::Status | Sub::Binding => unreachable!("not proxied"),
    };
    let query = out.finish();
    if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    }
}

fn is_websocket(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("websocket"))
}

/// Serve pods/{log,exec,attach,portforward} by forwarding to the pod's kubelet.
pub(crate) async fn pod_subresource(
    state: &Arc<State>,
    def: &'static ResourceDef,
    ns: &str,
    name: &str,
    sub: Sub,
    q: &Query,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    let allowed = match sub {
        Sub::Log => method == http::Method::GET,
        _ => method == http::Method::GET || method == http::Method::POST,
    };
    if !allowed {
        return Err(ApiError::method_not_allowed());
    }
    if sub != Sub::Log && is_websocket(&req) {
        // kubectl >= 1.30 tries websockets first and falls back to SPDY on this error.
        return Err(ApiError::bad_request(
            "websocket upgrades are not supported; use SPDY/3.1",
        ));
    }
    let store = state.store.clone();
    let key = def.key(ns, name);
    let pod = blocking(move || store.get(&key))
        .await??
        .ok_or_else(|| ApiError::not_found(def, name))?;
    let container = if sub == Sub::PortForward {
        String::new()
    } else {
        pick_container(&pod, q.get("container"))?
    };
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if node_name.is_empty() {
        if sub == Sub::Log {
            // kube-apiserver: no location yet, so an empty log.
            return Ok(http::Response::builder()
                .header(http::header::CONTENT_TYPE, "text/plain")
                .body(super::handlers::full(""))
                .expect("valid response"));
        }
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    if matches!(sub, Sub::Exec | Sub::Attach) {
        if let Some(phase @ ("Succeeded" | "Failed")) =
            pod.pointer("/status/phase").and_then(Value::as_str)
        {
            let verb = if sub == Sub::Exec { "exec" } else { "attach" };
            return Err(ApiError::bad_request(format!(
                "cannot {verb} into a container in a completed pod; current phase is {phase}"
            )));
        }
    }
    let nodes = resources::nodes();
    let store = state.store.clone();
    let key = nodes.key("", &node_name);
    let node = blocking(move || store.get(&key))
        .await??
        .ok_or_else(|| ApiError::not_found(nodes, &node_name))?;
    let addr = kubelet_address(&node).ok_or_else(|| {
        ApiError::internal(format!("node {node_name} has no address for its kubelet"))
    })?;
    let target = format!(
        "https://{addr}{}",
        kubelet_path(sub, ns, name, &container, q)
    );
    let url = url::Url::parse(&target)
        .map_err(|e| ApiError::internal(format!("kubelet URL {target}: {e}")))?;
    debug!(%url, "proxying to kubelet");
    let resp = crate::streamproxy::forward(req, url, Some(state.kubelet_tls.clone()))
        .await
        .map_err(|e| ApiError::internal(format!("error dialing backend: {e}")))?;
    if sub == Sub::Log && !resp.status().is_success() {
        return Err(log_error(resp).await);
    }
    Ok(resp)
}

/// A kubelet's non-2xx answer to a log request as a Status, like kube-apiserver's
/// GenericHttpResponseChecker: the kubelet's text becomes the message (kubectl prints it).
async fn log_error(resp: Response<Body>) -> ApiError {
    use http_body_util::BodyExt;
    const MAX_READ: usize = 4096;
    let code = resp.status().as_u16();
    let text = match resp.into_body().collect().await {
        Ok(b) => {
            let bytes = b.to_bytes();
            String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_READ)]).trim().to_string()
        }
        Err(e) => return ApiError::internal(format!("reading the kubelet's answer: {e}")),
    };
    kubelet_error(code, text)
}

/// Pure mapping of a kubelet error status + text to the Status kube-apiserver returns.
fn kubelet_error(code: u16, text: String) -> ApiError {
    match code {
        400 => ApiError::bad_request(text),
        500 => ApiError::internal(text),
        404 => ApiError::new(404, "NotFound", text),
        _ => ApiError::new(code, "InternalError", text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubelet_errors_keep_the_kubelet_text() {
        let e = kubelet_error(400, "previous terminated container \"c\" in pod \"p\" not found".into());
        assert_eq!((e.code, e.reason), (400, "BadRequest"));
        assert_eq!(e.message, "previous terminated container \"c\" in pod \"p\" not found");
        assert_eq!(kubelet_error(500, "boom".into()).message, "Internal error occurred: boom");
        assert_eq!(kubelet_error(404, "gone".into()).reason, "NotFound");
    }

    #[test]
    fn containers() {
        let one = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "a"}]}});
        assert_eq!(pick_container(&one, None).unwrap(), "a");
        assert_eq!(pick_container(&one, Some("a")).unwrap(), "a");
        assert_eq!(pick_container(&one, Some("b")).unwrap_err().code, 400);
        let two = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(
            pick_container(&two, None).unwrap_err().message,
            "a container name must be specified for pod web, choose one of: [a b]"
        );
    }

    #[test]
    fn addresses() {
        let n = json!({"status": {"addresses": [{"type": "Hostname", "address": "h"}, {"type": "InternalIP", "address": "10.0.0.2"}],
                       "daemonEndpoints": {"kubeletEndpoint": {"Port": 10251}}}});
        assert_eq!(kubelet_address(&n).unwrap(), "10.0.0.2:10251");
        let v6 = json!({"status": {"addresses": [{"type": "InternalIP", "address": "fd00::1"}]}});
        assert_eq!(kubelet_address(&v6).unwrap(), "[fd00::1]:10250");
        assert!(kubelet_address(&json!({})).is_none());
    }

    #[test]
    fn kubelet_paths() {
        let q = Query::parse(Some("command=sh&command=-c&command=echo+hi&stdin=true&stdout=true&stderr=true&tty=false&container=a"));
        assert_eq!(
            kubelet_path(Sub::Exec, "default", "web", "a", &q),
            "/exec/default/web/a?input=1&output=1&error=1&command=sh&command=-c&command=echo+hi"
        );
        let q = Query::parse(Some("follow=true&tailLines=10&timestamps=true&container=a"));
        assert_eq!(
            kubelet_path(Sub::Log, "default", "web", "a", &q),
            "/containerLogs/default/web/a?follow=true&timestamps=true&tailLines=10"
        );
        assert_eq!(
            kubelet_path(Sub::Log, "ns", "p", "c", &Query::default()),
            "/containerLogs/ns/p/c"
        );
    }
}
