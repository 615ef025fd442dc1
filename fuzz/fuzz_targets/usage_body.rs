//! SDK usage (`/api/client/metrics`), registration (`/api/client/register`) and bulk bodies:
//! never a panic.
#![no_main]
use flagpost::usage::body;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    match first % 3 {
        0 => drop(body::metrics(rest)),
        1 => drop(body::registration(rest)),
        _ => drop(body::bulk(rest)),
    }
});
