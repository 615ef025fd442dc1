//! What token validation needs from a fleet sharing verdicts, owned here so that `auth`
//! depends on no store: [`crate::fleet::Fleet`] implements it on Redis, the tests with a fake.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::SharedVerdict;

/// A boxed future, so the trait can be used as `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Verdicts shared by a fleet: read, claimed, written, announced.
pub trait SharedVerdicts: Send + Sync {
    /// The verdicts the fleet holds for these raw tokens (those it has; never wider than a
    /// token states).
    fn verdicts<'a>(&'a self, raws: &'a [String]) -> BoxFuture<'a, HashMap<String, SharedVerdict>>;
    /// Claims the right to ask upstream about each token; true where this instance asks.
    fn claim<'a>(&'a self, raws: &'a [String]) -> BoxFuture<'a, Vec<bool>>;
    /// How long a claim lasts: the longest wait for another instance's verdict.
    fn claim_ttl(&self) -> Duration;
    /// Shares verdicts, and announces them (and the tokens found revoked).
    fn share<'a>(
        &'a self,
        verdicts: &'a [(String, SharedVerdict)],
        revoked: &'a [String],
    ) -> BoxFuture<'a, ()>;
    /// Changes when another instance announced new verdicts.
    fn announced(&self) -> tokio::sync::watch::Receiver<u64>;
}
