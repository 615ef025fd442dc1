//! Tokens from the `Authorization` header (and every other place a token is read): parsing never
//! panics, and a parsed token shows of itself only what is before its secret and at most a
//! quarter (at most 4 characters) of the secret.
#![no_main]
use flagpost::token::Token;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(token) = Token::parse(text) else {
        return;
    };
    let _ = token.stated_scope();
    let _ = token.environment();
    let raw = token.expose();
    // The secret, by the documented rule: after `user:`; after the last `.` of a token with a
    // `:`; otherwise all of it.
    let secret = if let Some(rest) = raw.strip_prefix("user:") {
        rest
    } else if raw.contains(':') {
        raw.rsplit_once('.').map_or(raw, |(_, s)| s)
    } else {
        raw
    };
    let prefix = &raw[..raw.len() - secret.len()];
    let redacted = token.redacted();
    let shown = redacted
        .strip_prefix(prefix)
        .and_then(|r| r.strip_suffix('…'))
        .unwrap_or_else(|| panic!("{redacted:?} is not {prefix:?} + part of the secret"));
    assert!(secret.starts_with(shown));
    assert!(
        shown.len() <= (secret.len() / 4).min(4),
        "{redacted:?} shows too much"
    );
    assert_eq!(format!("{token}"), redacted);
    assert_eq!(format!("{token:?}"), format!("Token({redacted})"));
});
