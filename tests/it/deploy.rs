//! The Kubernetes manifests (`deploy/kubernetes/`), rendered with `kubectl kustomize` (no
//! cluster needed) and read back as JSON: the relations an operator relies on hold.

use std::path::PathBuf;

use serde_json::Value;

/// The rendered objects of a kustomization directory.
fn render(dir: &str) -> Vec<Value> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("kubectl")
        .args(["kustomize", dir])
        .current_dir(&root)
        .output()
        .expect("kubectl (with kustomize) is needed to render the manifests");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let python = root.join("tests/sdk/.venv/bin/python");
    assert!(
        python.exists(),
        "the test tools are not installed: run `python3 -m venv tests/sdk/.venv && \
         tests/sdk/.venv/bin/pip install -r tests/sdk/requirements.txt` (.ci/run does)"
    );
    let mut child = std::process::Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let json = child.wait_with_output().unwrap();
    assert!(json.status.success());
    serde_json::from_slice(&json.stdout).unwrap()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

/// Whether every label of `selector` is in `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().unwrap();
    !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v)
}

fn seconds(text: &str) -> u64 {
    text.strip_suffix('s').unwrap().parse().unwrap()
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

fn check(objects: &[Value]) -> (u64, Value) {
    let deployment = of_kind(objects, "Deployment");
    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert!(selects(
        &deployment["spec"]["selector"]["matchLabels"],
        labels
    ));
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(container["ports"][0]["name"], "http");
    assert_eq!(container["ports"][0]["containerPort"], 3063);
    // The pause, the drain delay and the grace fit in the grace period Kubernetes gives.
    let pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap();
    let delay = seconds(
        env(container, "SHUTDOWN_DELAY").unwrap()["value"]
            .as_str()
            .unwrap(),
    );
    let grace = seconds(
        env(container, "SHUTDOWN_GRACE").unwrap()["value"]
            .as_str()
            .unwrap(),
    );
    let period = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        pause + delay + grace < period,
        "{pause} + {delay} + {grace} >= {period}"
    );
    assert!(container["resources"]["requests"]["cpu"].is_string());
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());
    assert_eq!(container["envFrom"][0]["secretRef"]["name"], "flagpost");
    let service = of_kind(objects, "Service");
    assert!(selects(&service["spec"]["selector"], labels));
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    let pdb = of_kind(objects, "PodDisruptionBudget");
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"], labels));
    let replicas = deployment["spec"]["replicas"].as_u64().unwrap();
    assert!(pdb["spec"]["minAvailable"].as_u64().unwrap() < replicas);
    let hpa = of_kind(objects, "HorizontalPodAutoscaler");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2);
    let monitor = of_kind(objects, "ServiceMonitor");
    assert!(selects(
        &monitor["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    ));
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "http");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    (replicas, container.clone())
}

#[test]
fn the_kustomize_base_and_the_fleet_overlay_hold_together() {
    let (replicas, base) = check(&render("deploy/kubernetes/base"));
    assert_eq!(replicas, 2);
    assert!(env(&base, "BACKUP_FOLDER").is_some());
    let fleet = render("deploy/kubernetes/overlays/redis-fleet");
    let (replicas, container) = check(&fleet);
    assert_eq!(replicas, 3);
    assert_eq!(
        of_kind(&fleet, "HorizontalPodAutoscaler")["spec"]["minReplicas"],
        3
    );
    assert_eq!(
        env(&container, "STORE_NAMESPACE").unwrap()["value"],
        "production"
    );
    assert!(
        env(&container, "BACKUP_FOLDER").is_none(),
        "a fleet starts from Redis"
    );
}
