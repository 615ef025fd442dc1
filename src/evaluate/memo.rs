//! Remembered Frontend API ETags: a conditional poll whose answer cannot have changed is
//! answered 304 without evaluating anything.
//!
//! The answer to a Frontend API request is a function of the snapshot (its environment and
//! revision), the token's projects, the listing, and the context, except for what chance and
//! the clock decide. A Frontend API ETag is made of two hashes: of the toggles chance does not
//! decide, and of those it does (random stickiness; default stickiness without `userId` or
//! `sessionId`; `gradualRolloutRandom`; flags depending on them: see [`super::Volatility`]). flagpost
//! remembers, per (environment, revision, projects, listing, canonical context), the first hash
//! (a 128-bit hash of the key → 64 bits and how long it holds; no bodies) in a bounded moka
//! cache. A conditional request whose key is remembered evaluates only the flags chance decides
//! (usually none) and is answered 304 when the ETag they make with the remembered hash matches.
//! Answers that depend on the time (date constraints on `currentTime` when the client does not
//! send one) are remembered only until the next date any constraint names; anything else the
//! clock decides is evaluated on every poll, as chance is (`volatility.rs` lists every input
//! the engine reads and why the key covers it).

use std::hash::{Hash, Hasher};
use std::time::Duration;

use unleash_types::client_features::Context;

use super::Listing;
use crate::token::Projects;

/// The remembered answers: per key, the hash of the part of the answer chance does not decide,
/// and until when it holds.
pub struct Memo {
    cache: Option<moka::sync::Cache<u128, (u64, i64)>>,
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memo")
            .field("entries", &self.cache.as_ref().map(|c| c.entry_count()))
            .finish()
    }
}

/// A request's place in the memo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key(u128);

impl Memo {
    /// At most `size` entries (0: nothing remembered), each for at most `ttl`.
    pub fn new(size: u64, ttl: Duration) -> Memo {
        Memo {
            cache: (size > 0).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(size)
                    .time_to_live(ttl)
                    .build()
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        self.cache.is_some()
    }

    /// The key of a request: everything its answer depends on but chance and the clock. The
    /// context is taken before the server sets `currentTime` (a client-given one is part of it).
    pub fn key(
        (environment, revision): (&str, u64),
        projects: &Projects,
        listing: Listing,
        context: &Context,
    ) -> Key {
        let mut h = Xxh3Hasher(xxhash_rust::xxh3::Xxh3::new());
        environment.hash(&mut h);
        revision.hash(&mut h);
        match projects {
            Projects::All => 0u8.hash(&mut h),
            Projects::Some(set) => {
                1u8.hash(&mut h);
                set.hash(&mut h);
            }
        }
        (listing == Listing::All).hash(&mut h);
        for field in [
            &context.user_id,
            &context.session_id,
            &context.environment,
            &context.app_name,
            &context.current_time,
            &context.remote_address,
        ] {
            field.hash(&mut h);
        }
        let mut properties: Vec<(&String, &String)> = context.properties.iter().flatten().collect();
        properties.sort_unstable();
        properties.hash(&mut h);
        Key(h.0.digest128())
    }

    /// The stable part's hash remembered for `key`, if still valid at `now` (Unix ms).
    pub fn get(&self, key: Key, now: i64) -> Option<u64> {
        let (stable, until) = self.cache.as_ref()?.get(&key.0)?;
        (now < until).then_some(stable)
    }

    pub fn put(&self, key: Key, stable: u64, until: i64) {
        if let Some(c) = &self.cache {
            // A repeated unconditional poll finds what it would write: no write.
            if c.get(&key.0) != Some((stable, until)) {
                c.insert(key.0, (stable, until));
            }
        }
    }

    /// Entries now (after pending maintenance).
    pub fn entries(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }
}

/// `Hasher` over xxh3 (128-bit digest read directly).
struct Xxh3Hasher(xxhash_rust::xxh3::Xxh3);

impl Hasher for Xxh3Hasher {
    fn finish(&self) -> u64 {
        self.0.digest()
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(user: Option<&str>) -> Context {
        Context {
            user_id: user.map(str::to_string),
            ..Context::default()
        }
    }

    #[test]
    fn keys_differ_by_everything_an_answer_depends_on() {
        let base = Memo::key(
            ("dev", 1),
            &Projects::All,
            Listing::Enabled,
            &ctx(Some("a")),
        );
        let mut with_props = ctx(Some("a"));
        with_props.properties = Some([("k".into(), "v".into()), ("x".into(), "y".into())].into());
        let mut reordered = ctx(Some("a"));
        reordered.properties = Some([("x".into(), "y".into()), ("k".into(), "v".into())].into());
        for other in [
            Memo::key(
                ("prod", 1),
                &Projects::All,
                Listing::Enabled,
                &ctx(Some("a")),
            ),
            Memo::key(
                ("dev", 2),
                &Projects::All,
                Listing::Enabled,
                &ctx(Some("a")),
            ),
            Memo::key(
                ("dev", 1),
                &Projects::from_names(["a"]),
                Listing::Enabled,
                &ctx(Some("a")),
            ),
            Memo::key(("dev", 1), &Projects::All, Listing::All, &ctx(Some("a"))),
            Memo::key(
                ("dev", 1),
                &Projects::All,
                Listing::Enabled,
                &ctx(Some("b")),
            ),
            Memo::key(("dev", 1), &Projects::All, Listing::Enabled, &with_props),
        ] {
            assert_ne!(base, other);
        }
        assert_eq!(
            Memo::key(("dev", 1), &Projects::All, Listing::Enabled, &with_props),
            Memo::key(("dev", 1), &Projects::All, Listing::Enabled, &reordered),
            "property order does not matter"
        );
        let memo = Memo::new(10, Duration::from_secs(60));
        memo.put(base, 42, 1_000);
        assert_eq!(memo.get(base, 999), Some(42));
        assert_eq!(memo.get(base, 1_000), None, "past its date boundary");
        assert_eq!(Memo::new(0, Duration::from_secs(1)).get(base, 0), None);
    }
}
