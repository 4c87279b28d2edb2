//! The tether.toml embedded in each Kubernetes ConfigMap is a valid tether config, so an
//! operator applying the manifests does not find a config error at rollout time. (The
//! manifests themselves are validated against the Kubernetes schemas in .ci/run.) Each
//! kustomization installs every manifest of its folder, and never an example (the
//! placeholder Secret, the example HTTPRoute).

mod support;

use std::path::Path;

use tether::config::{Config, Source};

/// The `tether.toml: |` block of a ConfigMap manifest.
fn embedded_toml(manifest: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    let mut indent = 0;
    for line in manifest.lines() {
        if inside {
            let this = line.len() - line.trim_start().len();
            if !line.trim().is_empty() && this < indent {
                break;
            }
            out.push_str(line.get(indent..).unwrap_or(""));
            out.push('\n');
        } else if line.trim() == "tether.toml: |" {
            inside = true;
            indent = line.len() - line.trim_start().len() + 2;
        }
    }
    assert!(!out.is_empty(), "no tether.toml block");
    out
}

fn check_manifest(path: &str, service: &str) {
    let manifest = std::fs::read_to_string(path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("k1"),
        "UkVQTEFDRS1NRS1XSVRILVRFVEhFUi1LRVlHRU4tT1VUUFVU",
    )
    .unwrap();
    // The Secret is mounted at /etc/tether/keys in the pod; here, a temp dir.
    let toml = embedded_toml(&manifest).replace("/etc/tether/keys/k1", "k1");
    let config = Config::parse(&toml, path, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let Source::Kubernetes(k) = &config.backends[0].source else {
        panic!("{path}: the backend should discover a Service");
    };
    assert_eq!(k.service, service);
    // `kubectl logs` and log shippers read one JSON object per line.
    assert!(config.server.log_json, "{path}: log_format = \"json\"");
    assert!(config.warnings.is_empty(), "{path}: {:?}", config.warnings);
    assert!(Path::new(path).exists());
}

#[test]
fn gateway_configmap_holds_a_valid_config() {
    check_manifest("config/kubernetes/configmap.yaml", "app");
}

#[test]
fn sidecar_configmap_holds_a_valid_config_with_prefer_local() {
    check_manifest(
        "config/kubernetes/sidecar/legacy-app.yaml",
        "legacy-app-pods",
    );
    let toml = embedded_toml(
        &std::fs::read_to_string("config/kubernetes/sidecar/legacy-app.yaml").unwrap(),
    );
    assert!(toml.contains("prefer_local = true"));
}

/// The `resources:` a kustomization lists.
fn kustomize_resources(dir: &str) -> Vec<String> {
    let k = std::fs::read_to_string(format!("{dir}/kustomization.yaml")).unwrap();
    let mut out = Vec::new();
    let mut inside = false;
    for line in k.lines() {
        if line.starts_with("resources:") {
            inside = true;
        } else if inside && line.trim_start().starts_with("- ") {
            out.push(line.trim_start()[2..].trim().to_string());
        } else if inside && !line.starts_with(' ') {
            inside = false;
        }
    }
    out.sort();
    out
}

/// The manifests in `dir` an install should apply: every YAML file but the kustomization
/// and the examples (`*.example.yaml`: the Secret's public placeholder key must never
/// sign cookies; the example HTTPRoute is for editing).
fn manifests_in(dir: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .filter(|n| n != "kustomization.yaml" && !n.ends_with(".example.yaml"))
        .collect();
    out.sort();
    out
}

#[test]
fn each_kustomization_installs_every_manifest_of_its_folder_but_the_examples() {
    for dir in [
        "config/kubernetes",
        "config/kubernetes/sidecar",
        "config/kubernetes/autoscaling",
        "config/kubernetes/ingress",
        "config/kubernetes/gateway",
    ] {
        assert_eq!(kustomize_resources(dir), manifests_in(dir), "{dir}");
    }
}

/// What `kubectl kustomize dir` renders, one kind per object.
fn rendered_kinds(kubectl: &Path, dir: &str) -> Vec<String> {
    let out = std::process::Command::new(kubectl)
        .args(["kustomize", dir])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut kinds: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .map(str::to_string)
        .collect();
    kinds.sort();
    kinds
}

#[test]
fn kubectl_apply_k_installs_the_gateway_and_the_sidecar_without_a_placeholder_key() {
    let Some(kubectl) = support::system_tool("kubectl", "kubernetes-client") else {
        return;
    };
    assert_eq!(
        rendered_kinds(&kubectl, "config/kubernetes"),
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
    let sidecar = rendered_kinds(&kubectl, "config/kubernetes/sidecar");
    assert!(sidecar.contains(&"Deployment".to_string()), "{sidecar:?}");
    assert!(!sidecar.contains(&"Secret".to_string()), "{sidecar:?}");
}

#[test]
fn the_gateway_cluster_role_may_watch_backend_traffic_policies() {
    let text = std::fs::read_to_string("config/kubernetes/gateway/rbac.yaml").unwrap();
    let role: serde_json::Value = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .find(|o: &serde_json::Value| o["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    let grants = |group: &str, resource: &str, verb: &str| {
        role["rules"].as_array().unwrap().iter().any(|r| {
            let has = |k: &str, v: &str| r[k].as_array().unwrap().iter().any(|x| x == v);
            has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
        })
    };
    for verb in ["get", "list", "watch"] {
        assert!(
            grants(
                "gateway.networking.x-k8s.io",
                "xbackendtrafficpolicies",
                verb
            ),
            "{verb}"
        );
    }
}
