#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use proptest::prelude::*;

use super::*;

#[test]
fn pairs_are_trimmed_and_percent_decoded() {
    let pairs = parse_pairs(" a = x%20y , b=%E2%9C%93,,", "k").unwrap();
    let shown: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect();
    assert_eq!(shown, [("a", "x y"), ("b", "✓")]);
    assert!(parse_pairs("novalue", "k").is_err());
    assert!(parse_pairs("=v", "k").is_err());
    assert!(parse_pairs("a=%zz", "k").is_err());
    assert!(parse_pairs("a=%FF", "k").is_err(), "not UTF-8");
}

#[test]
fn samplers_of_the_specification() {
    let s = |n: &str, a: Option<&str>| sampler(Some(n.into()), a.map(str::to_string));
    assert_eq!(s("always_on", None).unwrap(), SamplerChoice::AlwaysOn);
    assert_eq!(
        s("traceidratio", Some("0.25")).unwrap(),
        SamplerChoice::Ratio(0.25)
    );
    assert_eq!(
        s("parentbased_traceidratio", None).unwrap(),
        SamplerChoice::ParentBased(ParentRoot::Ratio(1.0))
    );
    assert_eq!(
        sampler(None, None).unwrap(),
        SamplerChoice::ParentBased(ParentRoot::AlwaysOn)
    );
    assert!(s("traceidratio", Some("-0.1")).is_err());
    assert!(s("traceidratio", Some("NaN")).is_err());
    assert!(s("jaeger_remote", None).is_err());
}

proptest! {
    /// Any text is either refused or read, never a panic; encoded pairs come back as given.
    #[test]
    fn pairs_parse_or_refuse(text in ".{0,80}") {
        let _ = parse_pairs(&text, "k");
    }

    #[test]
    fn encoded_pairs_round_trip(pairs in prop::collection::vec(("[a-z][a-z0-9._-]{0,10}", ".{0,20}"), 0..5)) {
        let encode = |v: &str| v.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
        let text = pairs.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect::<Vec<_>>().join(",");
        let back = parse_pairs(&text, "k").unwrap();
        prop_assert_eq!(back.len(), pairs.len());
        for ((k, v), (bk, bv)) in pairs.iter().zip(&back) {
            prop_assert_eq!(k, bk);
            prop_assert_eq!(v.as_str(), bv.expose());
        }
    }
}
