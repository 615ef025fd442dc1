//! The [`Store`]: every environment flagpost serves, each with its serving scope and its
//! current snapshot, swapped whole behind arc-swap so readers never block; and the scope rule
//! applied to a request ([`Store::admit`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};

use super::Snapshot;
use crate::token::{Projects, Scope};

/// What one environment may serve: the union of the projects of its live startup client
/// tokens. It narrows when a startup token is refused and is set again, from the live tokens'
/// validated scopes alone, when one is accepted again; nothing else changes it.
#[derive(Debug)]
pub struct ServingScope(ArcSwap<Projects>);

impl ServingScope {
    fn new(projects: Projects) -> ServingScope {
        ServingScope(ArcSwap::from_pointee(projects))
    }

    /// Whether `projects` are all served; if not, the ones missing, for the error message.
    fn admits(&self, projects: &Projects) -> Result<(), String> {
        let serving = self.0.load();
        if serving.covers(projects) {
            Ok(())
        } else {
            Err(serving.missing_from(projects))
        }
    }

    fn narrow(&self, projects: &Projects) {
        let narrowed = self.0.load().intersect(projects);
        self.0.store(Arc::new(narrowed));
    }

    fn set(&self, projects: &Projects) {
        self.0.store(Arc::new(projects.clone()));
    }
}

/// The state of one environment: its serving scope and its current snapshot.
#[derive(Debug)]
pub struct EnvSlot {
    serving: ServingScope,
    snapshot: ArcSwapOption<Snapshot>,
}

/// Why a request's scope cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateError {
    /// PROTOCOL.md §2: the startup client tokens do not cover this scope.
    NotCovered {
        environment: String,
        missing: String,
    },
    /// Covered, but no snapshot has been loaded for the environment yet.
    NotReady { environment: String },
}

/// Every environment flagpost serves. The set is fixed once known (at start in offline mode,
/// after the startup tokens are validated in edge mode); each environment's serving scope may
/// then only shrink.
#[derive(Debug, Default)]
pub struct Store {
    envs: ArcSwap<HashMap<String, Arc<EnvSlot>>>,
    initialized: AtomicBool,
    /// Bumped whenever a serving scope changes, so that long-lived streams check theirs again.
    scopes_changed: tokio::sync::watch::Sender<u64>,
}

impl Store {
    /// A store whose environments are not known yet: nothing is served, not ready.
    pub fn pending() -> Store {
        Store::default()
    }

    /// A store serving these environments, with the projects flagpost may serve in each.
    pub fn new(serving: impl IntoIterator<Item = (String, Projects)>) -> Store {
        let store = Store::pending();
        store.init(serving);
        store
    }

    /// Sets the environments and their serving scopes (the union of the projects given for
    /// each). Later calls replace the set (an environment still served keeps its snapshot):
    /// only startup code calls this.
    fn init(&self, serving: impl IntoIterator<Item = (String, Projects)>) {
        let mut unions: HashMap<String, Projects> = HashMap::new();
        for (env, projects) in serving {
            unions
                .entry(env)
                .or_insert_with(Projects::none)
                .extend(&projects);
        }
        let old = self.envs.load();
        let envs = unions
            .into_iter()
            .map(|(env, projects)| {
                let kept = old.get(&env).and_then(|s| s.snapshot.load_full());
                let slot = EnvSlot {
                    serving: ServingScope::new(projects),
                    snapshot: ArcSwapOption::new(kept),
                };
                (env, Arc::new(slot))
            })
            .collect();
        self.envs.store(Arc::new(envs));
        self.initialized.store(true, Ordering::Release);
    }

    pub fn is_initialized(&self) -> bool {
        self.initialized.load(Ordering::Acquire)
    }

    pub fn environments(&self) -> Vec<String> {
        let mut envs: Vec<String> = self.envs.load().keys().cloned().collect();
        envs.sort();
        envs
    }

    pub fn snapshot(&self, environment: &str) -> Option<Arc<Snapshot>> {
        self.envs
            .load()
            .get(environment)
            .and_then(|s| s.snapshot.load_full())
    }

    /// Swaps in a new snapshot. Returns false for an environment flagpost does not serve.
    fn publish(&self, snapshot: Snapshot) -> bool {
        match self.envs.load().get(snapshot.environment()) {
            Some(slot) => {
                slot.snapshot.store(Some(Arc::new(snapshot)));
                true
            }
            None => false,
        }
    }

    /// Narrows what an environment may serve to at most `projects` (a startup token was
    /// revoked). Never widens.
    fn restrict(&self, environment: &str, projects: &Projects) {
        if let Some(slot) = self.envs.load().get(environment) {
            slot.serving.narrow(projects);
        }
        self.scopes_changed.send_modify(|n| *n += 1);
    }

    /// The projects flagpost may serve in `environment` now.
    pub fn serving(&self, environment: &str) -> Option<Projects> {
        self.envs
            .load()
            .get(environment)
            .map(|slot| (**slot.serving.0.load()).clone())
    }

    /// Changes whenever a serving scope may have changed.
    fn scope_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.scopes_changed.subscribe()
    }

    /// Sets what an environment may serve to `projects`: the union of its live startup tokens'
    /// validated scopes (a refused startup token was accepted again). The caller computes it
    /// from those tokens alone, so it is never wider than they are.
    fn serve(&self, environment: &str, projects: &Projects) {
        if let Some(slot) = self.envs.load().get(environment) {
            slot.serving.set(projects);
        }
        self.scopes_changed.send_modify(|n| *n += 1);
    }

    /// The environments that have no snapshot yet (none before they are known: check
    /// [`Store::is_initialized`] first).
    pub fn unloaded(&self) -> Vec<String> {
        let mut envs: Vec<String> = self
            .envs
            .load()
            .iter()
            .filter(|(_, s)| s.snapshot.load().is_none())
            .map(|(env, _)| env.clone())
            .collect();
        envs.sort();
        envs
    }

    /// The scope rule, applied once: whether the serving scope covers `scope` and, if it does,
    /// the environment's snapshot (`None` while none is loaded).
    pub fn admit(&self, scope: &Scope) -> Result<Option<Arc<Snapshot>>, GateError> {
        if !self.is_initialized() {
            return Err(GateError::NotReady {
                environment: scope.environment.clone(),
            });
        }
        let envs = self.envs.load();
        let Some(slot) = envs.get(&scope.environment) else {
            return Err(GateError::NotCovered {
                environment: scope.environment.clone(),
                missing: "any project".into(),
            });
        };
        match slot.serving.admits(&scope.projects) {
            Ok(()) => Ok(slot.snapshot.load_full()),
            Err(missing) => Err(GateError::NotCovered {
                environment: scope.environment.clone(),
                missing,
            }),
        }
    }

    /// [`Store::admit`] for a request that needs the snapshot: not loaded is "not ready"
    /// (the tests' shorthand; the handlers count each outcome themselves).
    #[cfg(test)]
    pub fn gate(&self, scope: &Scope) -> Result<Arc<Snapshot>, GateError> {
        self.admit(scope)?.ok_or_else(|| GateError::NotReady {
            environment: scope.environment.clone(),
        })
    }

    /// The scope rule alone: whether the serving scope covers `scope` (loaded or not).
    pub fn check(&self, scope: &Scope) -> Result<(), GateError> {
        self.admit(scope).map(drop)
    }
}

/// The one handle that changes what a [`Store`] serves: its environments, snapshots and
/// serving scopes. [`StoreWriter::new`] makes the shared store with it, so there is one per
/// store; the publisher owns it, and every change SDKs and streams can observe goes through
/// the publisher (`publish::Publisher`), which announces it.
#[derive(Debug)]
pub struct StoreWriter(Arc<Store>);

impl StoreWriter {
    pub fn new(store: Store) -> StoreWriter {
        StoreWriter(Arc::new(store))
    }

    /// The store, to read.
    pub fn store(&self) -> Arc<Store> {
        self.0.clone()
    }

    /// See `Store::init`: the environments and their serving scopes, at start.
    pub fn init(&self, serving: impl IntoIterator<Item = (String, Projects)>) {
        self.0.init(serving);
    }

    /// Swaps in a new snapshot. Returns false for an environment flagpost does not serve.
    pub fn publish(&self, snapshot: Snapshot) -> bool {
        self.0.publish(snapshot)
    }

    /// Narrows what an environment may serve (never widens).
    pub fn restrict(&self, environment: &str, projects: &Projects) {
        self.0.restrict(environment, projects);
    }

    /// Sets what an environment may serve to the union of its live startup tokens' scopes.
    pub fn serve(&self, environment: &str, projects: &Projects) {
        self.0.serve(environment, projects);
    }

    /// Changes whenever a serving scope may have changed.
    pub fn scope_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.scope_changes()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::snapshot;
    use super::*;

    #[test]
    fn a_pending_store_serves_nothing() {
        let store = Store::pending();
        let scope = Scope::new("development", Projects::All);
        assert!(matches!(
            store.gate(&scope),
            Err(GateError::NotReady { .. })
        ));
        assert!(!store.is_initialized());
        store.init([("development".to_string(), Projects::All)]);
        assert_eq!(store.unloaded(), ["development"]);
        assert!(store.publish(snapshot()));
        assert!(store.unloaded().is_empty());
        assert!(store.gate(&scope).is_ok());
    }

    #[test]
    fn gate_applies_the_serving_scope() {
        let store = Store::new([
            ("development".to_string(), Projects::from_names(["default"])),
            (
                "development".to_string(),
                Projects::from_names(["checkout"]),
            ),
        ]);
        let both = Scope::new("development", Projects::from_names(["default", "checkout"]));
        assert_eq!(
            store.gate(&both).unwrap_err(),
            GateError::NotReady {
                environment: "development".into()
            }
        );
        assert!(store.publish(snapshot()));
        assert!(store.gate(&both).is_ok());
        let wider = Scope::new("development", Projects::from_names(["default", "mobile"]));
        assert_eq!(
            store.gate(&wider).unwrap_err(),
            GateError::NotCovered {
                environment: "development".into(),
                missing: "mobile".into()
            }
        );
        let all = Scope::new("development", Projects::All);
        assert!(store.gate(&all).is_err());
        let prod = Scope::new("production", Projects::from_names(["default"]));
        assert!(matches!(
            store.gate(&prod),
            Err(GateError::NotCovered { .. })
        ));
        store.restrict("development", &Projects::from_names(["default"]));
        assert!(store.gate(&both).is_err());
        store.restrict("development", &Projects::All);
        assert!(store.gate(&both).is_err(), "restrict never widens");
    }
}
