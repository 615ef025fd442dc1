//! The SSE reader of the upstream stream: bytes cut anywhere, never a panic, and no event (nor
//! the buffer behind it) larger than the limit.
#![no_main]
use flagpost::sse::Parser;
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let mut parser = Parser::new(LIMIT);
    let step = usize::from(cut).max(1);
    for chunk in rest.chunks(step) {
        match parser.feed(chunk) {
            Ok(events) => {
                for e in events {
                    assert!(e.data.len() <= LIMIT, "an event of {} bytes", e.data.len());
                }
            }
            Err(_) => return,
        }
    }
});
