//! `flagpost explain TOKEN`: an `/internal-backstage/explain` answer as text for a person.

/// An `/internal-backstage/explain` answer as text for a person (`flagpost explain`).
// Indexing a `serde_json::Value` by key gives `Null` when the key is absent: it cannot panic.
#[allow(clippy::indexing_slicing)]
pub fn text(v: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let list = |v: &serde_json::Value| -> String {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|p| p.as_str().unwrap_or("?").to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_string();
    let mut out = String::new();
    let _ = writeln!(out, "token      {}", text(&v["token"]));
    if v["valid"] != true {
        let _ = writeln!(
            out,
            "verdict    refused ({}): {}",
            text(&v["answer"]["error"]),
            text(&v["answer"]["message"])
        );
        let _ = writeln!(out, "answer     {}", v["answer"]["status"]);
        return out;
    }
    let _ = writeln!(
        out,
        "kind       {} token (verdict from {})",
        text(&v["kind"]),
        text(&v["source"])
    );
    let _ = writeln!(
        out,
        "scope      environment {}, projects {}",
        text(&v["scope"]["environment"]),
        list(&v["scope"]["projects"])
    );
    let serving = &v["serving"];
    let _ = writeln!(
        out,
        "serving    environment {}: {}",
        text(&serving["environment"]),
        if serving["projects"].is_null() {
            "nothing (no startup token for it)".to_string()
        } else {
            format!("projects {}", list(&serving["projects"]))
        }
    );
    if v["covered"] == true {
        let _ = writeln!(out, "covered    yes, by {}", list(&v["covered_by"]));
    } else {
        let _ = writeln!(
            out,
            "covered    no: not served in environment {}: {}",
            text(&v["missing"]["environment"]),
            text(&v["missing"]["projects"])
        );
    }
    if let Some(n) = v["features_served"].as_u64() {
        let _ = writeln!(out, "served     {n} features on {}", text(&v["api"]));
    }
    let answer = &v["answer"];
    if answer["status"] == 200 {
        let _ = writeln!(out, "answer     200");
    } else {
        let _ = writeln!(
            out,
            "answer     {} {}: {}",
            answer["status"],
            text(&answer["error"]),
            text(&answer["message"])
        );
    }
    out
}
