//! Durations (`"15s"`, `"500ms"`) and sizes (`"1MiB"`) as written in configuration.

use std::time::Duration;

/// The shortest timeout or interval accepted: below it, flagpost would spin.
pub const MIN_PERIOD: Duration = Duration::from_millis(10);

/// Parses `<integer><unit>` with unit `ms`, `s`, `m`, `h` or `d`. With `bare_seconds`, a plain
/// integer means seconds (the command line accepts Unleash Edge's `--reload-interval 5`).
pub fn parse_duration(text: &str, bare_seconds: bool) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "expected a duration like \"15s\" or \"500ms\", got {text:?}"
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("the number in {text:?} is too large"))?;
    let millis_per_unit: u64 = match unit.trim() {
        "" if bare_seconds => 1000,
        "" => {
            return Err(format!(
                "write durations with a unit, e.g. \"{n}s\" (got {text:?})"
            ))
        }
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {text:?}: use ms, s, m, h or d"
            ))
        }
    };
    n.checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("the duration {text:?} is too large"))
}

/// Parses a size such as `"64KiB"`, `"1MiB"`, `"1MB"` or a plain number of bytes.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "expected a size like \"1MiB\" or \"64KiB\", got {text:?}"
        ));
    }
    let n: usize = digits
        .parse()
        .map_err(|_| format!("the number in {text:?} is too large"))?;
    let factor: usize = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {text:?}: use B, KiB, MiB, GiB (or KB, MB, GB)"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("the size {text:?} is too large"))
}

/// Writes a duration the way configuration reads it back.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".into()
    } else if ms.is_multiple_of(86_400_000) {
        format!("{}d", ms / 86_400_000)
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Writes a size the way configuration reads it back.
pub fn format_size(bytes: usize) -> String {
    if bytes != 0 && bytes.is_multiple_of(1 << 30) {
        format!("{}GiB", bytes >> 30)
    } else if bytes != 0 && bytes.is_multiple_of(1 << 20) {
        format!("{}MiB", bytes >> 20)
    } else if bytes != 0 && bytes.is_multiple_of(1 << 10) {
        format!("{}KiB", bytes >> 10)
    } else {
        format!("{bytes}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s", false), Ok(Duration::from_secs(15)));
        assert_eq!(
            parse_duration("500ms", false),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("2m", false), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h", false), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("5", true), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5", false).unwrap_err().contains("\"5s\""));
        assert!(parse_duration("5 weeks", false).is_err());
        assert!(parse_duration("", true).is_err());
        assert!(parse_duration("s", true).is_err());
        assert!(parse_duration("99999999999999999999s", true).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert!(parse_size("1 parsec").is_err());
        assert!(parse_size("MiB").is_err());
    }

    proptest! {
        #[test]
        fn duration_round_trips(ms in 0u64..10_000_000_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse_duration(&format_duration(d), false), Ok(d));
        }

        #[test]
        fn size_round_trips(n in 0usize..(1 << 40)) {
            prop_assert_eq!(parse_size(&format_size(n)), Ok(n));
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}") {
            let _ = parse_duration(&s, true);
            let _ = parse_size(&s);
        }
    }
}
