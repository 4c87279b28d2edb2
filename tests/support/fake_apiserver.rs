//! A fake Kubernetes API server that speaks the real wire protocol for EndpointSlices,
//! Ingresses and IngressClasses (namespaced, all-namespaces and cluster-scoped paths):
//! LIST with `metadata.resourceVersion`; WATCH as a chunked 200 response of
//! newline-delimited JSON events (ADDED, MODIFIED, DELETED, BOOKMARK); 410 Gone as an
//! ERROR event inside the stream; label selectors; kube's `?&` query strings.
//! Gateway API objects (GatewayClasses, Gateways, HTTPRoutes, ReferenceGrants at
//! v1beta1) are served the same way, and so are core/v1 Namespaces, Services and Secrets
//! (under `/api/v1`; a metadata-only watch gets the whole objects, which deserialise as
//! metadata; field selectors such as `type=kubernetes.io/tls` are honoured).
//!
//! For Ingress mode's writes it also serves: `coordination.k8s.io/v1` Leases (GET,
//! POST, PATCH; a server-side apply without `force` that would change a field another
//! field manager set is a 409 Conflict, as kube-lease-manager relies on; strategic and
//! merge patches take the fields they set, `null` removes one), PATCH of the `/status`
//! of an Ingress, GatewayClass, Gateway or HTTPRoute (a merge patch of `status`'s
//! fields; a `metadata.resourceVersion` in the patch that is not the object's is a 409
//! Conflict; delivered as MODIFIED, recorded with its fieldManager), and POST of
//! core/v1 Events (recorded).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify};

use super::{full, BoxBody, ChannelBody};

/// The resources served: (plural, apiVersion, kind, namespaced).
const RESOURCES: &[(&str, &str, &str, bool)] = &[
    // Gateway API mode.
    (
        "gatewayclasses",
        "gateway.networking.k8s.io/v1",
        "GatewayClass",
        false,
    ),
    ("gateways", "gateway.networking.k8s.io/v1", "Gateway", true),
    (
        "httproutes",
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        true,
    ),
    (
        "referencegrants",
        "gateway.networking.k8s.io/v1beta1",
        "ReferenceGrant",
        true,
    ),
    ("namespaces", "v1", "Namespace", false),
    ("services", "v1", "Service", true),
    (
        "endpointslices",
        "discovery.k8s.io/v1",
        "EndpointSlice",
        true,
    ),
    ("ingresses", "networking.k8s.io/v1", "Ingress", true),
    // Certificates for TLS listeners.
    ("secrets", "v1", "Secret", true),
    // Gateway API's experimental channel.
    (
        "xbackendtrafficpolicies",
        "gateway.networking.x-k8s.io/v1alpha1",
        "XBackendTrafficPolicy",
        true,
    ),
    (
        "ingressclasses",
        "networking.k8s.io/v1",
        "IngressClass",
        false,
    ),
];

/// A served resource: (plural, apiVersion, kind, namespaced).
type Resource = (&'static str, &'static str, &'static str, bool);

/// (plural, namespace, name); the namespace is empty for cluster-scoped objects.
type Key = (String, String, String);

struct Watcher {
    resource: String,
    /// `None`: all namespaces.
    namespace: Option<String>,
    selector: Vec<(String, String)>,
    /// The field selector: (dotted field path, value).
    fields: Vec<(String, String)>,
    tx: mpsc::Sender<Bytes>,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// Oldest resourceVersion a watch may resume from; older ones get 410.
    compacted: u64,
    objects: BTreeMap<Key, Value>,
    /// (rv, type, object) of delivered events, for watches resuming from an older rv.
    history: Vec<(u64, &'static str, Value)>,
    watchers: Vec<Watcher>,
    /// When set, changes are made but not delivered (events lost in a gap).
    muted: bool,
    /// When set, LIST requests wait for `release_lists`.
    hold_lists: bool,
    lists: usize,
    watches: usize,
    /// The plural of every LIST and WATCH served, in order.
    listed: Vec<String>,
    /// (namespace, name) → (Lease, field → the field manager that set it).
    leases: BTreeMap<(String, String), (Value, BTreeMap<String, String>)>,
    status_writes: Vec<StatusWrite>,
    events: Vec<Value>,
    /// Plurals answered with 404, as a cluster without their CRD does.
    unserved: std::collections::BTreeSet<String>,
}

/// A PATCH of an object's status.
#[derive(Debug, Clone)]
pub struct StatusWrite {
    /// `namespace/name` (`name` for a cluster-scoped object) of the Ingress, or of the
    /// object of `resource`.
    pub ingress: String,
    /// The resource's plural: `ingresses`, `gatewayclasses`, `gateways`, `httproutes`.
    pub resource: String,
    /// The `fieldManager` query parameter.
    pub field_manager: String,
    /// The patch's `status`.
    pub status: Value,
}

struct Inner {
    state: Mutex<State>,
    stop: Mutex<Option<watch::Sender<bool>>>,
    lists_released: Notify,
}

/// The fake API server.
#[derive(Clone)]
pub struct FakeApiServer {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl FakeApiServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = FakeApiServer {
            addr: listener.local_addr().unwrap(),
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    rv: 100,
                    ..State::default()
                }),
                stop: Mutex::new(None),
                lists_released: Notify::new(),
            }),
        };
        s.serve(listener);
        s
    }

    fn serve(&self, listener: TcpListener) {
        let (tx, mut rx) = watch::channel(false);
        *self.inner.stop.lock().unwrap() = Some(tx);
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Ok((stream, _)) = listener.accept() => {
                        let this = this.clone();
                        let mut stop = rx.clone();
                        tokio::spawn(async move {
                            let svc = service_fn(move |req| {
                                let this = this.clone();
                                async move { Ok::<_, Infallible>(this.handle(req).await) }
                            });
                            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                            tokio::select! { _ = conn => {}, _ = stop.changed() => {} }
                        });
                    }
                    _ = rx.changed() => break,
                }
            }
        });
    }

    /// A kubeconfig file pointing at this server over plain http.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
                 contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
                 current-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
                self.addr
            ),
        )
        .unwrap();
        path
    }

    // === changes ===

    /// Creates or replaces an object (ADDED or MODIFIED).
    pub fn apply(&self, mut obj: Value) {
        let mut st = self.inner.state.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = key_of(&obj);
        let ty = if st.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        st.objects.insert(key, obj.clone());
        deliver(&mut st, rv, ty, obj);
    }

    /// Deletes an EndpointSlice (DELETED).
    pub fn delete(&self, namespace: &str, name: &str) {
        self.delete_object("endpointslices", namespace, name)
    }

    /// Deletes an object of resource `plural` (DELETED); `namespace` is empty for
    /// cluster-scoped objects.
    pub fn delete_object(&self, plural: &str, namespace: &str, name: &str) {
        let mut st = self.inner.state.lock().unwrap();
        let Some(mut obj) =
            st.objects
                .remove(&(plural.to_string(), namespace.to_string(), name.to_string()))
        else {
            return;
        };
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        deliver(&mut st, rv, "DELETED", obj);
    }

    /// Sends a BOOKMARK to every watcher.
    pub fn bookmark(&self) {
        let mut st = self.inner.state.lock().unwrap();
        let rv = st.rv;
        for (plural, api_version, kind, _) in RESOURCES {
            let ev = json!({"type": "BOOKMARK", "object": {
                "kind": kind, "apiVersion": api_version,
                "metadata": {"resourceVersion": rv.to_string()}}});
            send_all(&mut st, &ev, |w| w.resource == *plural);
        }
    }

    /// While muted, changes are made but never delivered nor replayable: a gap.
    pub fn mute(&self, on: bool) {
        self.inner.state.lock().unwrap().muted = on;
    }

    /// Expires every watch: an ERROR 410 event inside the stream, then the stream ends;
    /// resuming from any earlier resourceVersion gets 410 too, forcing a re-list.
    pub fn expire_watches(&self) {
        let mut st = self.inner.state.lock().unwrap();
        st.compacted = st.rv;
        st.history.clear();
        let ev = gone_event();
        for w in std::mem::take(&mut st.watchers) {
            let _ = w.tx.try_send(line(&ev));
        }
    }

    /// Holds LIST requests until [`FakeApiServer::release_lists`].
    pub fn hold_lists(&self) {
        self.inner.state.lock().unwrap().hold_lists = true;
    }

    pub fn release_lists(&self) {
        self.inner.state.lock().unwrap().hold_lists = false;
        self.inner.lists_released.notify_waiters();
    }

    /// Goes down: closes the listener and every connection and stream.
    pub fn stop(&self) {
        if let Some(tx) = self.inner.stop.lock().unwrap().take() {
            let _ = tx.send(true);
        }
        self.inner.state.lock().unwrap().watchers.clear();
    }

    /// Comes back on the same address.
    pub async fn restart(&self) {
        let std = std::net::TcpListener::bind(self.addr).unwrap();
        std.set_nonblocking(true).unwrap();
        self.serve(TcpListener::from_std(std).unwrap());
    }

    /// Number of LIST and WATCH requests served.
    pub fn requests(&self) -> (usize, usize) {
        let st = self.inner.state.lock().unwrap();
        (st.lists, st.watches)
    }

    /// Number of LIST and WATCH requests served for resource `plural`.
    pub fn requests_of(&self, plural: &str) -> usize {
        let st = self.inner.state.lock().unwrap();
        st.listed.iter().filter(|p| *p == plural).count()
    }

    /// A stored object: `namespace` is empty for cluster-scoped ones.
    pub fn object(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let st = self.inner.state.lock().unwrap();
        st.objects
            .get(&(plural.to_string(), namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// A Lease.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        let st = self.inner.state.lock().unwrap();
        st.leases
            .get(&(namespace.to_string(), name.to_string()))
            .map(|(l, _)| l.clone())
    }

    /// Every status PATCH so far (of every resource).
    pub fn status_writes(&self) -> Vec<StatusWrite> {
        self.inner.state.lock().unwrap().status_writes.clone()
    }

    /// Answers 404 for `plural` from now on, as a cluster without its CRD does.
    pub fn unserve(&self, plural: &str) {
        self.inner
            .state
            .lock()
            .unwrap()
            .unserved
            .insert(plural.into());
    }

    /// Every Event created so far.
    pub fn events(&self) -> Vec<Value> {
        self.inner.state.lock().unwrap().events.clone()
    }

    // === protocol ===

    async fn handle(&self, req: Request<Incoming>) -> Response<BoxBody> {
        let path = req.uri().path().to_string();
        let query = parse_query(req.uri().query().unwrap_or(""));
        let method = req.method().clone();
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if let Some(r) = self.write(&method, &path, &query, &content_type, &body) {
            return r;
        }
        let unserved = |r: &Resource| self.inner.state.lock().unwrap().unserved.contains(r.0);
        let Some((resource, namespace)) = route(&path).filter(|(r, _)| !unserved(r)) else {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("{path} not found"),
            );
        };
        let selector: Vec<(String, String)> = query
            .get("labelSelector")
            .map(|s| {
                s.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.trim_end_matches('=').to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let fields: Vec<(String, String)> = query
            .get("fieldSelector")
            .map(|s| {
                s.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.trim_end_matches('=').to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        if query.get("watch").map(String::as_str) == Some("true") {
            let from: u64 = query
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            return self.watch(resource, namespace, selector, fields, from);
        }
        loop {
            let released = self.inner.lists_released.notified();
            if !self.inner.state.lock().unwrap().hold_lists {
                break;
            }
            released.await;
        }
        let mut st = self.inner.state.lock().unwrap();
        st.lists += 1;
        st.listed.push(resource.0.to_string());
        let items: Vec<Value> = st
            .objects
            .iter()
            .filter(|((r, ns, _), o)| {
                *r == resource.0
                    && namespace.as_ref().is_none_or(|n| n == ns)
                    && matches(o, &selector)
                    && matches_fields(o, &fields)
            })
            .map(|(_, o)| o.clone())
            .collect();
        let body = json!({
            "apiVersion": resource.1,
            "kind": format!("{}List", resource.2),
            "metadata": {"resourceVersion": st.rv.to_string()},
            "items": items,
        });
        Response::builder()
            .header("content-type", "application/json")
            .body(full(body.to_string()))
            .unwrap()
    }

    fn watch(
        &self,
        resource: Resource,
        namespace: Option<String>,
        selector: Vec<(String, String)>,
        fields: Vec<(String, String)>,
        from: u64,
    ) -> Response<BoxBody> {
        let (tx, rx) = mpsc::channel(4096);
        let mut st = self.inner.state.lock().unwrap();
        st.watches += 1;
        st.listed.push(resource.0.to_string());
        if from < st.compacted {
            let _ = tx.try_send(line(&gone_event()));
        } else {
            for (rv, ty, obj) in &st.history {
                let (r, ns, _) = key_of(obj);
                if *rv > from
                    && r == resource.0
                    && namespace.as_ref().is_none_or(|n| *n == ns)
                    && matches(obj, &selector)
                    && matches_fields(obj, &fields)
                {
                    let _ = tx.try_send(line(&json!({"type": ty, "object": obj})));
                }
            }
            st.watchers.push(Watcher {
                resource: resource.0.to_string(),
                namespace,
                selector,
                fields,
                tx,
            });
        }
        Response::builder()
            .header("content-type", "application/json")
            .body(ChannelBody::new(rx).boxed())
            .unwrap()
    }
}

impl FakeApiServer {
    /// Leases, Ingress status and Events; `None` for the list/watch paths.
    fn write(
        &self,
        method: &http::Method,
        path: &str,
        query: &BTreeMap<String, String>,
        content_type: &str,
        body: &[u8],
    ) -> Option<Response<BoxBody>> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let manager = query.get("fieldManager").cloned().unwrap_or_default();
        let parse = || serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
        let mut st = self.inner.state.lock().unwrap();
        match parts.as_slice() {
            ["apis", "coordination.k8s.io", "v1", "namespaces", ns, "leases", rest @ ..] => {
                let ns = ns.to_string();
                Some(match (method.as_str(), rest) {
                    ("GET", [name]) => match st.leases.get(&(ns.clone(), name.to_string())) {
                        Some((l, _)) => ok(StatusCode::OK, l),
                        None => status(StatusCode::NOT_FOUND, "NotFound", "lease not found"),
                    },
                    ("POST", []) => {
                        let mut lease = parse();
                        let name = lease["metadata"]["name"].as_str().unwrap_or("").to_string();
                        if st.leases.contains_key(&(ns.clone(), name.clone())) {
                            return Some(status(
                                StatusCode::CONFLICT,
                                "AlreadyExists",
                                "lease already exists",
                            ));
                        }
                        st.rv += 1;
                        lease["apiVersion"] = json!("coordination.k8s.io/v1");
                        lease["kind"] = json!("Lease");
                        lease["metadata"]["namespace"] = json!(ns);
                        lease["metadata"]["resourceVersion"] = json!(st.rv.to_string());
                        if !lease["spec"].is_object() {
                            lease["spec"] = json!({});
                        }
                        st.leases
                            .insert((ns, name), (lease.clone(), BTreeMap::new()));
                        ok(StatusCode::CREATED, &lease)
                    }
                    ("PATCH", [name]) => {
                        let rv = st.rv + 1;
                        let Some((lease, owners)) = st.leases.get_mut(&(ns, name.to_string()))
                        else {
                            return Some(status(
                                StatusCode::NOT_FOUND,
                                "NotFound",
                                "lease not found",
                            ));
                        };
                        let patch = if content_type.contains("yaml") {
                            serde_yaml_ng::from_slice::<Value>(body).unwrap_or(Value::Null)
                        } else {
                            parse()
                        };
                        let apply = content_type.starts_with("application/apply-patch");
                        let force = query.get("force").map(String::as_str) == Some("true");
                        let fields = patch["spec"].as_object().cloned().unwrap_or_default();
                        if apply && !force {
                            for (k, v) in &fields {
                                let other = owners.get(k).is_some_and(|o| *o != manager);
                                if other && !lease["spec"][k].is_null() && lease["spec"][k] != *v {
                                    return Some(status(
                                        StatusCode::CONFLICT,
                                        "Conflict",
                                        &format!("Apply failed with 1 conflict: conflict with {:?}: .spec.{k}", owners[k]),
                                    ));
                                }
                            }
                        }
                        for (k, v) in fields {
                            if v.is_null() {
                                if let Some(spec) = lease["spec"].as_object_mut() {
                                    spec.remove(&k);
                                }
                                owners.remove(&k);
                            } else {
                                lease["spec"][k.as_str()] = v;
                                owners.insert(k, manager.clone());
                            }
                        }
                        lease["metadata"]["resourceVersion"] = json!(rv.to_string());
                        let lease = lease.clone();
                        st.rv = rv;
                        ok(StatusCode::OK, &lease)
                    }
                    _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", path),
                })
            }
            ["apis", "networking.k8s.io", "v1", "namespaces", ns, "ingresses", name, "status"]
                if method == http::Method::PATCH =>
            {
                Some(patch_status(
                    &mut st,
                    "ingresses",
                    ns,
                    name,
                    manager,
                    parse(),
                ))
            }
            ["apis", "gateway.networking.k8s.io", "v1", "namespaces", ns, plural @ ("gateways" | "httproutes"), name, "status"]
                if method == http::Method::PATCH =>
            {
                Some(patch_status(&mut st, plural, ns, name, manager, parse()))
            }
            ["apis", "gateway.networking.k8s.io", "v1", "gatewayclasses", name, "status"]
                if method == http::Method::PATCH =>
            {
                Some(patch_status(
                    &mut st,
                    "gatewayclasses",
                    "",
                    name,
                    manager,
                    parse(),
                ))
            }
            ["api", "v1", "namespaces", ns, "events"] if method == http::Method::POST => {
                let mut event = parse();
                event["metadata"]["namespace"] = json!(ns);
                st.rv += 1;
                event["metadata"]["resourceVersion"] = json!(st.rv.to_string());
                st.events.push(event.clone());
                Some(ok(StatusCode::CREATED, &event))
            }
            _ => None,
        }
    }
}

/// A merge patch of an object's `status`: each field of the patch's `status` replaces
/// the object's (`null` removes it); recorded, and delivered as MODIFIED.
fn patch_status(
    st: &mut State,
    plural: &str,
    ns: &str,
    name: &str,
    manager: String,
    patch: Value,
) -> Response<BoxBody> {
    let key = (plural.to_string(), ns.to_string(), name.to_string());
    let Some(mut obj) = st.objects.get(&key).cloned() else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{plural} {name} not found"),
        );
    };
    if let Some(rv) = patch["metadata"]["resourceVersion"].as_str() {
        if obj["metadata"]["resourceVersion"] != rv {
            return status(
                StatusCode::CONFLICT,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version",
            );
        }
    }
    st.status_writes.push(StatusWrite {
        ingress: if ns.is_empty() {
            name.to_string()
        } else {
            format!("{ns}/{name}")
        },
        resource: plural.to_string(),
        field_manager: manager,
        status: patch["status"].clone(),
    });
    if !obj["status"].is_object() {
        obj["status"] = json!({});
    }
    for (k, v) in patch["status"].as_object().cloned().unwrap_or_default() {
        if v.is_null() {
            obj["status"].as_object_mut().unwrap().remove(&k);
        } else {
            obj["status"][k.as_str()] = v;
        }
    }
    st.rv += 1;
    let rv = st.rv;
    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
    st.objects.insert(key, obj.clone());
    deliver(st, rv, "MODIFIED", obj.clone());
    ok(StatusCode::OK, &obj)
}

fn ok(code: StatusCode, body: &Value) -> Response<BoxBody> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(full(body.to_string()))
        .unwrap()
}

fn deliver(st: &mut State, rv: u64, ty: &'static str, obj: Value) {
    if st.muted {
        return;
    }
    st.history.push((rv, ty, obj.clone()));
    let ev = json!({"type": ty, "object": obj});
    let (r, ns, _) = key_of(&obj);
    send_all(st, &ev, |w| {
        w.resource == r
            && w.namespace.as_ref().is_none_or(|n| *n == ns)
            && matches(&obj, &w.selector)
            && matches_fields(&obj, &w.fields)
    });
}

fn send_all(st: &mut State, ev: &Value, filter: impl Fn(&Watcher) -> bool) {
    let bytes = line(ev);
    st.watchers
        .retain(|w| !filter(w) || w.tx.try_send(bytes.clone()).is_ok());
}

fn line(v: &Value) -> Bytes {
    Bytes::from(format!("{v}\n"))
}

fn gone_event() -> Value {
    json!({"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "reason": "Expired", "code": 410,
        "message": "too old resource version"}})
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<BoxBody> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": reason, "message": message, "code": code.as_u16()});
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(full(body.to_string()))
        .unwrap()
}

/// The resource a collection path names, and its namespace (`None`: all namespaces or
/// cluster-scoped): `/apis/GROUP/VERSION[/namespaces/NS]/PLURAL`, or
/// `/api/VERSION[/namespaces/NS]/PLURAL` for the core group.
fn route(path: &str) -> Option<(Resource, Option<String>)> {
    let parts: Vec<&str> = if let Some(rest) = path.strip_prefix("/apis/") {
        rest.split('/').collect()
    } else {
        std::iter::once("")
            .chain(path.strip_prefix("/api/")?.split('/'))
            .collect()
    };
    let gv = |g: &str, v: &str| {
        if g.is_empty() {
            v.to_string()
        } else {
            format!("{g}/{v}")
        }
    };
    let (group_version, namespace, plural) = match parts.as_slice() {
        [g, v, "namespaces", ns, plural] => (gv(g, v), Some(ns.to_string()), *plural),
        [g, v, plural] => (gv(g, v), None, *plural),
        _ => return None,
    };
    let r = RESOURCES.iter().find(|(p, gv, _, namespaced)| {
        *p == plural && *gv == group_version && (*namespaced || namespace.is_none())
    })?;
    Some((*r, namespace))
}

fn key_of(obj: &Value) -> Key {
    let kind = obj["kind"].as_str().unwrap_or("EndpointSlice");
    let (plural, _, _, namespaced) = RESOURCES
        .iter()
        .find(|(_, _, k, _)| *k == kind)
        .unwrap_or_else(|| panic!("the fake API server does not serve {kind}"));
    let namespace = if *namespaced {
        obj["metadata"]["namespace"].as_str().unwrap_or("default")
    } else {
        ""
    };
    (
        plural.to_string(),
        namespace.to_string(),
        obj["metadata"]["name"].as_str().unwrap().to_string(),
    )
}

/// A field selector (`type=kubernetes.io/tls`, `metadata.name=x`) holds for `obj`.
fn matches_fields(obj: &Value, fields: &[(String, String)]) -> bool {
    fields.iter().all(|(path, v)| {
        path.split('.')
            .try_fold(obj, |o, k| o.get(k))
            .and_then(Value::as_str)
            == Some(v.as_str())
    })
}

fn matches(obj: &Value, selector: &[(String, String)]) -> bool {
    selector
        .iter()
        .all(|(k, v)| obj["metadata"]["labels"][k.as_str()] == v.as_str())
}

/// Parses a query string, tolerating kube's leading `?&` and empty pairs.
fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// === object builders ===

/// One endpoint of a slice.
#[derive(Clone)]
pub struct Ep {
    pub ip: String,
    pub pod: Option<String>,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
}

impl Ep {
    /// A ready endpoint of pod `pod` at `ip`.
    pub fn pod(pod: &str, ip: &str) -> Ep {
        Ep {
            ip: ip.into(),
            pod: Some(pod.into()),
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
        }
    }

    /// The same endpoint, terminating but still serving.
    pub fn terminating(mut self) -> Ep {
        self.ready = Some(false);
        self.serving = Some(true);
        self.terminating = Some(true);
        self
    }
}

/// An EndpointSlice of Service `service` in `namespace` with one named port.
pub fn slice(
    namespace: &str,
    name: &str,
    service: &str,
    port_name: &str,
    port: u16,
    eps: &[Ep],
) -> Value {
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|e| {
            let mut v = json!({
                "addresses": [e.ip],
                "conditions": {"ready": e.ready, "serving": e.serving, "terminating": e.terminating},
            });
            if let Some(p) = &e.pod {
                v["targetRef"] = json!({"kind": "Pod", "namespace": namespace, "name": p, "uid": format!("uid-{p}")});
            }
            v
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
        },
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

/// A Service (only its metadata is read).
pub fn service(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ports": [{"port": 80}]},
    })
}

/// A Namespace with `labels`.
pub fn namespace(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
    })
}

/// A ReferenceGrant in `namespace` letting HTTPRoutes of `from` refer to Service
/// `service` there.
pub fn reference_grant(namespace: &str, name: &str, from: &str, service: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": from}],
            "to": [{"group": "", "kind": "Service", "name": service}],
        },
    })
}

/// An IngressClass handled by `controller`.
pub fn ingress_class(name: &str, controller: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": name},
        "spec": {"controller": controller},
    })
}

/// An Ingress of class `class` with one host whose `paths` (path, pathType) all go to
/// Service `service` port `port`.
#[allow(clippy::too_many_arguments)]
pub fn ingress(
    namespace: &str,
    name: &str,
    class: &str,
    host: &str,
    paths: &[(&str, &str)],
    service: &str,
    port: u16,
    annotations: &[(&str, &str)],
) -> Value {
    let paths: Vec<Value> = paths
        .iter()
        .map(|(path, kind)| {
            json!({"path": path, "pathType": kind,
                   "backend": {"service": {"name": service, "port": {"number": port}}}})
        })
        .collect();
    let annotations: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{namespace}-{name}"),
                     "generation": 1, "annotations": annotations},
        "spec": {
            "ingressClassName": class,
            "rules": [{"host": host, "http": {"paths": paths}}],
        },
    })
}

/// A cluster for the controllers' tests (Ingress mode, Gateway API mode): a fake API
/// server holding `objects`, three pods of Service `web` in `ns` on one port (slice
/// `web-1`, port `http`), and a tether with no backend of its own whose config adds
/// `mode` (e.g. `[kubernetes.ingress]` and its settings).
pub struct ModeCluster {
    pub api: FakeApiServer,
    pub pods: Vec<Arc<super::TestBackend>>,
    pub port: u16,
    pub proxy: super::Running,
    pub dir: tempfile::TempDir,
}

impl ModeCluster {
    pub async fn start(ns: &str, objects: Vec<Value>, mode: &str) -> ModeCluster {
        let (pods, port) = super::pods_on_one_port(&["pod-a", "pod-b", "pod-c"]).await;
        let api = FakeApiServer::start().await;
        for o in objects {
            api.apply(o);
        }
        let eps: Vec<Ep> = pods
            .iter()
            .map(|p| Ep::pod(&p.name, &p.addr.ip().to_string()))
            .collect();
        api.apply(slice(ns, "web-1", "web", "http", port, &eps));
        let dir = tempfile::tempdir().unwrap();
        api.kubeconfig(dir.path());
        let proxy = super::proxy_with(
            &Self::config_in(dir.path(), mode),
            tether::server::Options::default(),
        )
        .await;
        ModeCluster {
            api,
            pods,
            port,
            proxy,
            dir,
        }
    }

    /// The config of a tether of this cluster in `mode`: another replica's, say.
    pub fn config(&self, mode: &str) -> String {
        Self::config_in(self.dir.path(), mode)
    }

    fn config_in(dir: &Path, mode: &str) -> String {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
             [kubernetes]\nkubeconfig = \"{}\"\nbackoff_min = \"50ms\"\nbackoff_max = \"300ms\"\n\
             {mode}[[keys]]\nid = \"k1\"\nsecret = \"{}\"\n",
            dir.join("kubeconfig").display(),
            super::KEY_1
        )
    }

    /// The names of the backends tether routes to now.
    pub fn backend_names(&self) -> Vec<String> {
        self.proxy
            .proxy
            .state()
            .backends
            .iter()
            .map(|b| b.name().to_string())
            .collect()
    }
}

/// A `kubernetes.io/tls` Secret holding `cert_pem` and `key_pem` (its `data`, base64).
pub fn tls_secret(namespace: &str, name: &str, cert_pem: &str, key_pem: &str) -> Value {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(cert_pem), "tls.key": b64(key_pem)},
    })
}
