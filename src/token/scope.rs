//! Scopes (an environment and a set of projects) and the rule at the heart of flagpost: which
//! scopes cover which (PROTOCOL.md section 2).

use std::collections::BTreeSet;
use std::fmt;

/// A set of projects: all of them, or a finite list.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Projects {
    All,
    Some(BTreeSet<String>),
}

impl Projects {
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Projects {
        let mut set = BTreeSet::new();
        for name in names {
            if name == "*" {
                return Projects::All;
            }
            set.insert(name.to_string());
        }
        Projects::Some(set)
    }

    /// The project names, `["*"]` for all: how scopes are written in JSON (the inverse of
    /// [`Projects::from_names`]).
    pub fn names(&self) -> Vec<String> {
        match self {
            Projects::All => vec!["*".into()],
            Projects::Some(set) => set.iter().cloned().collect(),
        }
    }

    pub fn none() -> Projects {
        Projects::Some(BTreeSet::new())
    }

    /// Whether `self` includes every project of `other`.
    pub fn covers(&self, other: &Projects) -> bool {
        match (self, other) {
            (Projects::All, _) => true,
            (Projects::Some(_), Projects::All) => false,
            (Projects::Some(mine), Projects::Some(theirs)) => theirs.is_subset(mine),
        }
    }

    pub fn contains(&self, project: &str) -> bool {
        match self {
            Projects::All => true,
            Projects::Some(set) => set.contains(project),
        }
    }

    /// Adds every project of `other`.
    pub fn extend(&mut self, other: &Projects) {
        match (&mut *self, other) {
            (Projects::All, _) => {}
            (_, Projects::All) => *self = Projects::All,
            (Projects::Some(mine), Projects::Some(theirs)) => {
                mine.extend(theirs.iter().cloned());
            }
        }
    }

    /// The projects both include.
    pub fn intersect(&self, other: &Projects) -> Projects {
        match (self, other) {
            (Projects::All, o) | (o, Projects::All) => o.clone(),
            (Projects::Some(a), Projects::Some(b)) => {
                Projects::Some(a.intersection(b).cloned().collect())
            }
        }
    }

    /// The projects of `wanted` that `self` lacks, described for an error message.
    pub fn missing_from(&self, wanted: &Projects) -> String {
        match (self, wanted) {
            (Projects::All, _) => String::new(),
            (Projects::Some(_), Projects::All) => "all projects (`*`)".to_string(),
            (Projects::Some(mine), Projects::Some(theirs)) => theirs
                .difference(mine)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

impl fmt::Debug for Projects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Projects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Projects::All => f.write_str("*"),
            Projects::Some(set) => {
                f.write_str("[")?;
                for (i, p) in set.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    f.write_str(p)?;
                }
                f.write_str("]")
            }
        }
    }
}

/// An environment and a set of projects: what a token may see.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub environment: String,
    pub projects: Projects,
}

impl Scope {
    pub fn new(environment: impl Into<String>, projects: Projects) -> Scope {
        Scope {
            environment: environment.into(),
            projects,
        }
    }

    /// PROTOCOL.md §2: `covers(A, B)` := same environment and A's projects include B's.
    pub fn covers(&self, other: &Scope) -> bool {
        self.environment == other.environment && self.projects.covers(&other.projects)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.projects, self.environment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn covers_follows_the_protocol_rule() {
        let all_dev = Scope::new("development", Projects::All);
        let a_dev = Scope::new("development", Projects::from_names(["a"]));
        let ab_dev = Scope::new("development", Projects::from_names(["a", "b"]));
        let a_prod = Scope::new("production", Projects::from_names(["a"]));
        assert!(all_dev.covers(&a_dev));
        assert!(all_dev.covers(&all_dev));
        assert!(ab_dev.covers(&a_dev));
        assert!(!a_dev.covers(&ab_dev));
        assert!(!ab_dev.covers(&all_dev));
        assert!(!a_dev.covers(&a_prod));
        assert_eq!(
            Projects::from_names(["a"]).missing_from(&ab_dev.projects),
            "b"
        );
        assert_eq!(
            ab_dev.projects.missing_from(&Projects::All),
            "all projects (`*`)"
        );
    }

    fn arb_projects() -> impl Strategy<Value = Projects> {
        prop_oneof![
            Just(Projects::All),
            proptest::collection::btree_set("[a-d]", 0..4).prop_map(Projects::Some),
        ]
    }

    fn arb_scope() -> impl Strategy<Value = Scope> {
        ("(dev|prod)", arb_projects()).prop_map(|(e, p)| Scope::new(e, p))
    }

    proptest! {
        #[test]
        fn covers_is_reflexive(a in arb_scope()) {
            prop_assert!(a.covers(&a));
        }

        #[test]
        fn covers_is_transitive(a in arb_scope(), b in arb_scope(), c in arb_scope()) {
            if a.covers(&b) && b.covers(&c) {
                prop_assert!(a.covers(&c));
            }
        }

        #[test]
        fn covers_never_lets_a_wider_scope_through(a in arb_scope(), b in arb_scope()) {
            if a.covers(&b) {
                prop_assert_eq!(&a.environment, &b.environment);
                match (&a.projects, &b.projects) {
                    (Projects::Some(_), Projects::All) => prop_assert!(false, "finite covered all"),
                    (Projects::Some(mine), Projects::Some(theirs)) => {
                        for p in theirs { prop_assert!(mine.contains(p)); }
                    }
                    _ => {}
                }
            }
        }

        #[test]
        fn union_covers_exactly_what_its_parts_cover_together(
            parts in proptest::collection::vec(arb_projects(), 0..4),
            wanted in arb_projects(),
        ) {
            let mut union = Projects::none();
            for p in &parts { union.extend(p); }
            let expected = match &wanted {
                Projects::All => parts.contains(&Projects::All),
                Projects::Some(set) => set.iter().all(|w| parts.iter().any(|p| p.contains(w))),
            };
            prop_assert_eq!(union.covers(&wanted), expected);
            prop_assert_eq!(union.missing_from(&wanted).is_empty(), expected);
        }
    }
}
