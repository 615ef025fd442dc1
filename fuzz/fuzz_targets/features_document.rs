//! The upstream features document (`/api/client/features`, the offline file, a backup) and the
//! delta events of the upstream stream: parsing, compiling a snapshot with Unleash's engine and
//! serving it never panic.
#![no_main]
use flagpost::evaluate::{context_from_query, fix_current_time, Clock, Listing};
use flagpost::snapshot::{Document, Snapshot};
use flagpost::token::Projects;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let document = if first % 2 == 0 {
        Document::parse(rest)
    } else {
        // Delta events applied to an empty document.
        let mut d = match Document::parse(br#"{"version":2,"features":[]}"#) {
            Ok(d) => d,
            Err(_) => return,
        };
        d.apply_events(rest).map(|_| d)
    };
    let Ok(document) = document else {
        return;
    };
    let (snapshot, _) = Snapshot::build("development", document);
    let _ = snapshot.client_body(&Projects::All, None);
    let mut context = match context_from_query("userId=1&sessionId=s&properties[country]=NO") {
        Ok(c) => c,
        Err(_) => return,
    };
    fix_current_time(&mut context);
    let _ = flagpost::evaluate::frontend_response(
        (snapshot.frontend(), snapshot.document()),
        &Projects::All,
        &context,
        Clock::Server,
        Listing::All,
    );
});
