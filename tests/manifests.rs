//! The tether.toml embedded in each Kubernetes ConfigMap is a valid tether config, so an
//! operator applying the manifests does not find a config error at rollout time. (The
//! manifests themselves are validated against the Kubernetes schemas in .ci/run.)

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
