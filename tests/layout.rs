//! The folder tree names the architecture, and dependencies between the crate's
//! top-level modules point one way: no module reaches back up to one that uses it.
//! Read from the source, as a reviewer would: every `crate::name` a module's files
//! mention outside their unit tests is a dependency of that module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every top-level module of the crate with the top-level modules its files name.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" || name == "main" {
            continue;
        }
        let mut files = Vec::new();
        if path.is_dir() {
            collect(&path, &mut files);
        } else {
            files.push(path.clone());
        }
        let mut deps = BTreeSet::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            // A module's unit tests may reach anywhere; its code may not.
            let code = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or(&text);
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let dep: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                // `crate::testing` is the unit tests' helper in lib.rs.
                if !dep.is_empty() && dep != name && dep != "testing" {
                    deps.insert(dep);
                }
            }
        }
        graph.insert(name, deps);
    }
    graph
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A cycle through `from`, if there is one: the modules on it, in order.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        at: &str,
        target: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == target {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, next, target, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![from.to_string()];
    walk(graph, from, from, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn no_module_depends_on_a_module_that_depends_on_it() {
    let graph = dependencies();
    assert!(graph.len() > 10, "read the source tree: {graph:?}");
    for module in graph.keys() {
        if let Some(c) = cycle(&graph, module) {
            panic!("module cycle: {} -> {module}", c.join(" -> "));
        }
    }
}

#[test]
fn the_layers_below_the_proxy_know_nothing_of_it() {
    let graph = dependencies();
    // What the request path is built from: none of it may reach up to the proxy, the
    // admin listener or the server (the three cycles #16 found were affinity-backend,
    // backend-proxy and metrics-proxy).
    for low in [
        "http", "upstream", "backend", "affinity", "metrics", "keys", "fault", "balance", "health",
        "retry",
    ] {
        let deps = &graph[low];
        for high in ["proxy", "admin", "server", "demo"] {
            assert!(!deps.contains(high), "{low} depends on {high}: {deps:?}");
        }
    }
    // The dashboard's history reads the backends' counters from the side: it knows
    // nothing of the request path, and the request path nothing of it.
    for high in ["proxy", "admin", "server"] {
        assert!(!graph["history"].contains(high), "{:?}", graph["history"]);
    }
    assert!(!graph["proxy"].contains("history"), "{:?}", graph["proxy"]);
    assert!(
        !graph["backend"].contains("affinity"),
        "{:?}",
        graph["backend"]
    );
    assert!(!graph["http"].contains("upstream"), "{:?}", graph["http"]);
}

#[test]
fn ingress_and_gateway_api_sit_beside_the_request_path() {
    let graph = dependencies();
    // `tether migrate` (and later the controllers) read Ingress and Gateway API objects
    // and produce settings; the request path never reaches for them, and the typed
    // Gateway API objects know nothing of Ingress.
    for (module, deps) in &graph {
        if module != "ingress" && module != "server" {
            assert!(!deps.contains("ingress"), "{module} depends on ingress");
        }
    }
    for low in [
        "http", "upstream", "backend", "affinity", "balance", "proxy", "config",
    ] {
        assert!(!graph[low].contains("gateway"), "{low} depends on gateway");
    }
    assert!(
        !graph["gateway"].contains("ingress"),
        "{:?}",
        graph["gateway"]
    );
    for high in ["proxy", "admin", "server", "demo", "history"] {
        assert!(!graph["ingress"].contains(high), "{:?}", graph["ingress"]);
        assert!(!graph["gateway"].contains(high), "{:?}", graph["gateway"]);
    }
}
