//! The JSON written by hand on hot paths (response bodies built from stored raw JSON, error
//! bodies, evaluated flags). Anything not on a hot path uses serde.

use std::fmt::Write as _;

/// Appends `s` as a JSON string literal.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    // Runs of characters that need no escaping are copied whole.
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        if b != b'"' && b != b'\\' && b >= 0x20 {
            continue;
        }
        out.push_str(s.get(start..i).unwrap_or(""));
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        start = i + 1;
    }
    out.push_str(s.get(start..).unwrap_or(""));
    out.push('"');
}

/// Appends `{"version":2,"features":[...],"segments":[...]` (the object left open for what
/// follows) from features' and segments' raw JSON.
pub fn push_features_and_segments<'a>(
    out: &mut String,
    features: impl Iterator<Item = &'a str>,
    segments: impl Iterator<Item = &'a str>,
) {
    out.push_str("{\"version\":2,\"features\":[");
    push_joined(out, features);
    out.push_str("],\"segments\":[");
    push_joined(out, segments);
    out.push(']');
}

/// Appends raw JSON values separated by commas.
pub fn push_joined<'a>(out: &mut String, values: impl Iterator<Item = &'a str>) {
    for (i, value) in values.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn json_strings_round_trip(text in "\\PC{0,40}|[\\x00-\\x7f]{0,40}") {
            let mut out = String::new();
            push_str(&mut out, &text);
            let back: String = serde_json::from_str(&out).unwrap();
            proptest::prop_assert_eq!(back, text);
        }
    }

    #[test]
    fn documents_are_written_from_raw_values() {
        let mut out = String::new();
        push_features_and_segments(
            &mut out,
            ["{\"name\":\"a\"}", "{}"].into_iter(),
            std::iter::empty(),
        );
        out.push('}');
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"version": 2, "features": [{"name": "a"}, {}], "segments": []})
        );
    }
}
