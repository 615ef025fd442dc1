//! The Frontend API context from a query string (GET) and from a JSON body (POST): never a
//! panic, and never more fields than the bound.
#![no_main]
use flagpost::evaluate::{context_from_json, context_from_query, MAX_CONTEXT_FIELDS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let context = if first % 2 == 0 {
        context_from_json(rest)
    } else {
        match std::str::from_utf8(rest) {
            Ok(query) => context_from_query(query),
            Err(_) => return,
        }
    };
    if let Ok(c) = context {
        let properties = c.properties.map_or(0, |p| p.len());
        assert!(properties <= MAX_CONTEXT_FIELDS, "{properties} properties");
    }
});
