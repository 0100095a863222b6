//! Dependency resolver: from the recipe's root packages to the closure over
//! `Pre-Depends` and `Depends`, with alternatives (`a | b`, first one that
//! can be had wins, unless another alternative is already chosen), version
//! constraints and virtual packages (`Provides`). Pure: a package index in,
//! a selection out.
//!
//! The image is unpacked, never installed: no maintainer script runs, so
//! `Conflicts`/`Breaks` and `Recommends` play no part, and the recipe can
//! *prune* packages that only matter to a dpkg-managed system (the kernel's
//! `kmod`, `linux-base`, `initramfs-tools`): a dependency that names a pruned
//! package counts as satisfied and the pruned package is not fetched, unless
//! a recipe root names it (then it is selected for that root's role, and
//! still no dependency edge leads to it).
//! The resolver is greedy and does not backtrack; for the short closures of
//! an initramfs that is enough, and a dead end is reported with the chain.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::debian::{Alternative, Dependency, Package};
use crate::version;

/// Errors from resolving.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    /// A root package is not in the index.
    #[error("package {0} does not exist in the archive index")]
    NoSuchPackage(String),
    /// No alternative of a dependency can be satisfied.
    #[error("cannot satisfy dependency {dependency} of {package}")]
    Unsatisfiable {
        /// The package that has the dependency.
        package: String,
        /// The dependency as written.
        dependency: String,
    },
}

/// An index of packages by name and by what they provide.
#[derive(Debug, Default)]
pub struct Index {
    by_name: BTreeMap<String, Vec<Package>>,
    providers: BTreeMap<String, Vec<(String, String)>>, // virtual → (package, its version)
}

impl Index {
    /// Build an index; for several versions of one name the highest wins
    /// when a choice is needed.
    pub fn new(packages: Vec<Package>) -> Self {
        let mut idx = Index::default();
        for p in packages {
            for prov in &p.provides {
                idx.providers
                    .entry(prov.name.clone())
                    .or_default()
                    .push((p.name.clone(), p.version.clone()));
            }
            idx.by_name.entry(p.name.clone()).or_default().push(p);
        }
        for v in idx.by_name.values_mut() {
            v.sort_by(|a, b| version::compare(&b.version, &a.version));
        }
        for v in idx.providers.values_mut() {
            v.sort();
            v.dedup();
        }
        idx
    }

    /// The highest version of `name` satisfying `alt`'s constraint.
    fn best(&self, alt: &Alternative) -> Option<&Package> {
        self.by_name
            .get(&alt.name)?
            .iter()
            .find(|p| match &alt.constraint {
                None => true,
                Some((rel, v)) => rel.holds(&p.version, v),
            })
    }

    /// Packages that provide `alt` (a versioned dependency needs a versioned
    /// Provides that satisfies it).
    fn providers_of(&self, alt: &Alternative) -> Vec<&Package> {
        let mut out = Vec::new();
        for p in self.by_name.values().filter_map(|v| v.first()) {
            for prov in &p.provides {
                if prov.name != alt.name {
                    continue;
                }
                let ok = match (&alt.constraint, &prov.constraint) {
                    (None, _) => true,
                    (Some((rel, want)), Some((crate::version::Relation::Eq, have))) => {
                        rel.holds(have, want)
                    }
                    (Some(_), _) => false,
                };
                if ok {
                    out.push(p);
                }
            }
        }
        out
    }

    /// The names of the packages marked `Essential: yes` (their highest
    /// version), sorted: what every Debian system has.
    pub fn essential(&self) -> Vec<String> {
        self.by_name
            .iter()
            .filter(|(_, v)| v.first().is_some_and(|p| p.essential))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Look up a package by exact name (highest version).
    pub fn get(&self, name: &str) -> Option<&Package> {
        self.by_name.get(name).and_then(|v| v.first())
    }
}

/// A selected package and the names of the selected packages its
/// dependencies were satisfied by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// The package stanza.
    pub package: Package,
    /// Names of selected packages it depends on (pruned ones left out).
    pub depends: BTreeSet<String>,
}

/// Resolve the closure of `roots`, not descending into `prune`d names.
pub fn resolve(
    index: &Index,
    roots: &[String],
    prune: &[String],
) -> Result<BTreeMap<String, Selected>, ResolveError> {
    let pruned: BTreeSet<&str> = prune.iter().map(String::as_str).collect();
    let mut selected: BTreeMap<String, Selected> = BTreeMap::new();
    let mut queue = VecDeque::new();
    for root in roots {
        let pkg = match index.get(root) {
            Some(p) => p,
            None => {
                // A virtual root with exactly one provider is taken.
                let alt = Alternative {
                    name: root.clone(),
                    constraint: None,
                };
                match index.providers_of(&alt).as_slice() {
                    [one] => *one,
                    _ => return Err(ResolveError::NoSuchPackage(root.clone())),
                }
            }
        };
        if !selected.contains_key(&pkg.name) {
            selected.insert(
                pkg.name.clone(),
                Selected {
                    package: pkg.clone(),
                    depends: BTreeSet::new(),
                },
            );
            queue.push_back(pkg.name.clone());
        }
    }
    while let Some(name) = queue.pop_front() {
        let deps = selected[&name].package.depends.clone();
        for dep in &deps {
            match choose(index, &selected, &pruned, dep) {
                Choice::Pruned => {}
                Choice::Have(n) => {
                    selected.get_mut(&name).expect("selected").depends.insert(n);
                }
                Choice::New(p) => {
                    let n = p.name.clone();
                    selected
                        .get_mut(&name)
                        .expect("selected")
                        .depends
                        .insert(n.clone());
                    selected.insert(
                        n.clone(),
                        Selected {
                            package: p.clone(),
                            depends: BTreeSet::new(),
                        },
                    );
                    queue.push_back(n);
                }
                Choice::None => {
                    return Err(ResolveError::Unsatisfiable {
                        package: name.clone(),
                        dependency: dep.to_string(),
                    })
                }
            }
        }
    }
    Ok(selected)
}

enum Choice<'a> {
    Pruned,
    Have(String),
    New(&'a Package),
    None,
}

fn satisfies(p: &Package, alt: &Alternative) -> bool {
    if p.name == alt.name {
        return match &alt.constraint {
            None => true,
            Some((rel, v)) => rel.holds(&p.version, v),
        };
    }
    p.provides.iter().any(|prov| {
        prov.name == alt.name
            && match (&alt.constraint, &prov.constraint) {
                (None, _) => true,
                (Some((rel, want)), Some((crate::version::Relation::Eq, have))) => {
                    rel.holds(have, want)
                }
                (Some(_), _) => false,
            }
    })
}

fn choose<'a>(
    index: &'a Index,
    selected: &BTreeMap<String, Selected>,
    pruned: &BTreeSet<&str>,
    dep: &Dependency,
) -> Choice<'a> {
    // Already satisfied by something chosen? A pruned package chosen as a
    // root (python3 for the system layer) does not count: the edge would
    // pull it into another role's closure (criu's in the initramfs).
    for alt in &dep.alternatives {
        if let Some(s) = selected
            .values()
            .find(|s| !pruned.contains(s.package.name.as_str()) && satisfies(&s.package, alt))
        {
            return Choice::Have(s.package.name.clone());
        }
    }
    if dep
        .alternatives
        .iter()
        .any(|a| pruned.contains(a.name.as_str()))
    {
        return Choice::Pruned;
    }
    for alt in &dep.alternatives {
        if let Some(p) = index.best(alt) {
            return Choice::New(p);
        }
        if let Some(p) = index.providers_of(alt).first() {
            return Choice::New(p);
        }
    }
    Choice::None
}
