//! The import graph of one crate and its cycles. Pure: a [`Crate`] in,
//! [`Cycle`]s out.
//!
//! Every path a module writes (each leaf of its `use` trees, and every
//! other path) is resolved to the module it names, the longest prefix of
//! it that is a module: `crate::exec::home::relay` is `exec::home`, or
//! `exec` if `exec` has no child `home`. Where resolution starts:
//!
//! - `crate::` at the root, `self::` at the module, each `super::` one
//!   module up;
//! - any other first segment is looked up in the module: a name its `use`
//!   declarations bind (`use crate::job;` then `job::Holder`), else a child
//!   module, else a name its glob imports bring (`use super::*;` then
//!   `target::Ack`, a sibling); a name found nowhere is another crate's or
//!   a local item, and the path is dropped;
//! - below the start, a segment that is not a child module but a name the
//!   module binds by a `use` item (not one inside a function) is followed,
//!   so re-exports count where they lead: `crate::Server` with
//!   `pub use agent::Server;` in `lib.rs` names `agent`.
//!
//! A path from module A naming module B is an edge A → B unless B is A,
//! an ancestor of A or a descendant of A: a parent declares and uses its
//! children and a child uses its parent (`super::*`); that is the tree,
//! not a cycle. Other edges are lifted to the children of the two modules'
//! lowest common ancestor: `exec::migrate` naming `job::holder` is the edge
//! `exec` → `job`, `exec::migrate` naming `exec::target` is `migrate` →
//! `target`. Every lifted edge joins two siblings, so a cycle is always
//! among the children of one module: two subsystems that reach into each
//! other, by whichever of their modules.
//!
//! The cycles are printed so that together they show every edge that lies
//! on one: in each strongly connected component, for each edge not yet
//! shown, the shortest cycle through it. Each edge names the first place
//! that makes it (file, line, the path as written) and how many more
//! there are.

use crate::syntax::{Binding, Use};
use crate::tree::Crate;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::path::PathBuf;

/// How deep resolution follows `use` bindings before giving up (a chain
/// of re-exports; a binding naming itself would loop).
const MAX_DEPTH: usize = 8;

/// One place that makes an edge.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Evidence {
    /// The file.
    pub file: PathBuf,
    /// The line of the path's last segment.
    pub line: usize,
    /// The path as written (a `use` leaf with its groups' prefix).
    pub path: String,
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} uses {}",
            self.file.display(),
            self.line,
            self.path
        )
    }
}

/// A path and where it leads, after lifting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The module that writes the path.
    pub from: usize,
    /// The module it names.
    pub to: usize,
    /// The lifted edge, `None` if `to` is `from`, an ancestor or a
    /// descendant.
    pub edge: Option<(usize, usize)>,
    /// Where it is written.
    pub evidence: Evidence,
}

/// The lifted edges of a crate, each with the places that make it.
#[derive(Debug, Default)]
pub struct Graph {
    /// From, to (module indices, siblings) → places, sorted.
    pub edges: BTreeMap<(usize, usize), Vec<Evidence>>,
}

/// A cycle of lifted edges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    /// The modules in order, the first (the smallest name) repeated last.
    pub modules: Vec<String>,
    /// For each edge, the first place that makes it and how many more do.
    pub edges: Vec<(Evidence, usize)>,
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (", self.modules.join(" -> "))?;
        for (k, (first, more)) in self.edges.iter().enumerate() {
            if k > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{first}")?;
            if *more > 0 {
                write!(f, ", and {more} more")?;
            }
        }
        f.write_str(")")
    }
}

/// Every path written in the crate that resolves to one of its modules.
pub fn references(krate: &Crate) -> Vec<Reference> {
    let resolver = Resolver { krate };
    let mut out = Vec::new();
    for (from, module) in krate.modules.iter().enumerate() {
        let paths = module
            .source
            .uses
            .iter()
            .map(|u| &u.path)
            .chain(module.source.paths.iter().map(|p| &p.path));
        for path in paths {
            let Some((to, _)) = resolver.resolve(from, &path.segments, 0) else {
                continue;
            };
            let evidence = Evidence {
                file: module.file.clone(),
                line: path.line,
                path: path.to_string(),
            };
            out.push(Reference {
                from,
                to,
                edge: lift(krate, from, to),
                evidence,
            });
        }
    }
    out
}

/// The lifted edge for a path from `from` naming `to`, if it is not a
/// parent/child relation.
fn lift(krate: &Crate, from: usize, to: usize) -> Option<(usize, usize)> {
    if krate.is_ancestor_or_self(from, to) || krate.is_ancestor_or_self(to, from) {
        return None;
    }
    let a = krate.lineage(from);
    let b = krate.lineage(to);
    // Both start at the root; they part below their lowest common
    // ancestor, and neither chain ends there (neither is an ancestor).
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    Some((a[common], b[common]))
}

impl Graph {
    /// The lifted edges of `krate`.
    pub fn new(krate: &Crate) -> Graph {
        let mut graph = Graph::default();
        for r in references(krate) {
            if let Some(edge) = r.edge {
                graph.edges.entry(edge).or_default().push(r.evidence);
            }
        }
        for places in graph.edges.values_mut() {
            places.sort();
            places.dedup();
        }
        graph
    }

    /// Cycles that together show every edge lying on a cycle, sorted.
    pub fn cycles(&self, krate: &Crate) -> Vec<Cycle> {
        let name = |m: usize| krate.modules[m].name();
        let mut successors: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &(a, b) in self.edges.keys() {
            successors.entry(a).or_default().push(b);
        }
        let mut cycles = Vec::new();
        for component in components(krate.modules.len(), &successors) {
            if component.len() < 2 {
                continue;
            }
            let inside: BTreeSet<usize> = component.iter().copied().collect();
            let mut shown: BTreeSet<(usize, usize)> = BTreeSet::new();
            let mut edges: Vec<(usize, usize)> = self
                .edges
                .keys()
                .copied()
                .filter(|(a, b)| inside.contains(a) && inside.contains(b))
                .collect();
            edges.sort_by_key(|&(a, b)| (name(a), name(b)));
            for (a, b) in edges {
                if shown.contains(&(a, b)) {
                    continue;
                }
                // b leads back to a: the component is strongly connected.
                let Some(back) = shortest_path(b, a, &successors, &inside) else {
                    continue;
                };
                let mut ring = vec![a];
                ring.extend(back);
                // ring is a, b, …, a; rotate it to start at the smallest name.
                ring.pop();
                let start = (0..ring.len()).min_by_key(|&k| name(ring[k])).unwrap_or(0);
                ring.rotate_left(start);
                ring.push(ring[0]);
                let hops: Vec<(usize, usize)> = ring.windows(2).map(|w| (w[0], w[1])).collect();
                shown.extend(hops.iter().copied());
                cycles.push(Cycle {
                    modules: ring.iter().map(|&m| name(m)).collect(),
                    edges: hops
                        .iter()
                        .map(|hop| {
                            let places = &self.edges[hop];
                            (places[0].clone(), places.len() - 1)
                        })
                        .collect(),
                });
            }
        }
        cycles.sort_by(|x, y| x.modules.cmp(&y.modules));
        cycles
    }
}

/// The shortest path from `from` to `to` inside `inside`, both ends
/// included, by breadth-first search in index order.
fn shortest_path(
    from: usize,
    to: usize,
    successors: &BTreeMap<usize, Vec<usize>>,
    inside: &BTreeSet<usize>,
) -> Option<Vec<usize>> {
    let mut came_from: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    let mut seen = BTreeSet::from([from]);
    while let Some(m) = queue.pop_front() {
        if m == to {
            let mut path = vec![to];
            while let Some(&p) = came_from.get(path.last()?) {
                path.push(p);
            }
            path.reverse();
            return Some(path);
        }
        for &next in successors.get(&m).into_iter().flatten() {
            if inside.contains(&next) && seen.insert(next) {
                came_from.insert(next, m);
                queue.push_back(next);
            }
        }
    }
    None
}

/// The strongly connected components of the graph (Tarjan's algorithm).
fn components(nodes: usize, successors: &BTreeMap<usize, Vec<usize>>) -> Vec<Vec<usize>> {
    struct State<'a> {
        successors: &'a BTreeMap<usize, Vec<usize>>,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State<'_>, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in s.successors.get(&v).into_iter().flatten() {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            s.out.push(component);
        }
    }
    let mut s = State {
        successors,
        index: vec![None; nodes],
        low: vec![0; nodes],
        on_stack: vec![false; nodes],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..nodes {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}

/// Resolves paths to modules.
struct Resolver<'a> {
    krate: &'a Crate,
}

impl Resolver<'_> {
    /// The module `segments`, written in module `at`, names, and whether
    /// every segment was a module (the path names the module itself).
    fn resolve(&self, at: usize, segments: &[String], depth: usize) -> Option<(usize, bool)> {
        if depth > MAX_DEPTH {
            return None;
        }
        let first = segments.first()?;
        let (mut current, mut rest) = match first.as_str() {
            "crate" => (0, &segments[1..]),
            "self" => (at, &segments[1..]),
            "super" => {
                let mut current = at;
                let mut k = 0;
                while segments.get(k).is_some_and(|s| s == "super") {
                    current = self.krate.modules[current].parent?;
                    k += 1;
                }
                (current, &segments[k..])
            }
            name => (self.lookup(at, name, false, depth)?, &segments[1..]),
        };
        while let Some(segment) = rest.first() {
            let module = &self.krate.modules[current];
            if let Some(&child) = module.children.get(segment) {
                current = child;
            } else if let Some(target) = self.binding(current, segment, true, depth) {
                // A re-export: `pub use agent::Server;` and `crate::Server`.
                current = target;
            } else {
                return Some((current, false));
            }
            rest = &rest[1..];
        }
        Some((current, true))
    }

    /// The module `name` leads to in module `at`: a name bound by `use`, a
    /// child module, or a name a glob import brings. `exported` when the
    /// name is looked up from outside the module (through a glob import).
    fn lookup(&self, at: usize, name: &str, exported: bool, depth: usize) -> Option<usize> {
        let module = &self.krate.modules[at];
        if let Some(bound) = self.bound(at, name, exported) {
            return self
                .resolve(at, &bound.path.segments, depth + 1)
                .map(|(m, _)| m);
        }
        if let Some(&child) = module.children.get(name) {
            return Some(child);
        }
        module
            .source
            .uses
            .iter()
            .filter(|u| u.binds == Binding::Glob && !(exported && u.nested))
            .filter_map(|u| match self.resolve(at, &u.path.segments, depth + 1) {
                Some((source, true)) if source != at => self.lookup(source, name, true, depth + 1),
                _ => None,
            })
            .next()
    }

    /// Where the name `name` that module `at` binds by `use` leads, if it
    /// binds it and it leads into this crate; `exported` as for
    /// [`Resolver::lookup`].
    fn binding(&self, at: usize, name: &str, exported: bool, depth: usize) -> Option<usize> {
        let bound = self.bound(at, name, exported)?;
        self.resolve(at, &bound.path.segments, depth + 1)
            .map(|(m, _)| m)
    }

    /// The `use` in module `at` that binds `name`. From outside the module
    /// (`exported`), a `use` inside a function's body binds nothing.
    fn bound(&self, at: usize, name: &str, exported: bool) -> Option<&Use> {
        self.krate.modules[at]
            .source
            .uses
            .iter()
            .filter(|u| !(exported && u.nested))
            .find(|u| matches!(&u.binds, Binding::Name(n) if n == name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Files;
    use crate::Error;
    use expect_test::{expect, Expect};
    use std::path::Path;

    /// Files from a fixture: `//- path` lines start each file.
    struct Fixture(BTreeMap<PathBuf, String>);

    impl Fixture {
        fn new(text: &str) -> Fixture {
            let mut files = BTreeMap::new();
            let mut current: Option<(PathBuf, String)> = None;
            for line in text.lines() {
                if let Some(path) = line.strip_prefix("//- ") {
                    files.extend(current.take());
                    current = Some((PathBuf::from(path.trim()), String::new()));
                } else if let Some((_, text)) = current.as_mut() {
                    text.push_str(line);
                    text.push('\n');
                }
            }
            files.extend(current);
            Fixture(files)
        }

        fn load(&self) -> Crate {
            Crate::load("fixture", Path::new("src/lib.rs"), self).unwrap()
        }
    }

    impl Files for Fixture {
        fn read(&self, path: &Path) -> Result<Option<String>, Error> {
            Ok(self.0.get(path).cloned())
        }
    }

    /// Prints every resolved path: where, what, the module it names and the
    /// lifted edge (or `tree` for a parent/child relation).
    fn check_refs(fixture: &str, expect: Expect) {
        let krate = Fixture::new(fixture).load();
        let name = |m: usize| krate.modules[m].name();
        let mut out = String::new();
        for r in references(&krate) {
            let edge = match r.edge {
                Some((a, b)) => format!("{} -> {}", name(a), name(b)),
                None => "tree".to_string(),
            };
            out.push_str(&format!(
                "{}:{} {} in {}: {} ({edge})\n",
                r.evidence.file.display(),
                r.evidence.line,
                r.evidence.path,
                name(r.from),
                name(r.to),
            ));
        }
        expect.assert_eq(&out);
    }

    /// Prints the cycles, one a line.
    fn check_cycles(fixture: &str, expect: Expect) {
        let krate = Fixture::new(fixture).load();
        let out: String = Graph::new(&krate)
            .cycles(&krate)
            .iter()
            .map(|c| format!("{c}\n"))
            .collect();
        expect.assert_eq(&out);
    }

    /// Prints each module of the crate rooted at `root` and its file, or
    /// the error.
    fn check_tree(fixture: &str, root: &str, expect: Expect) {
        let out = match Crate::load("fixture", Path::new(root), &Fixture::new(fixture)) {
            Ok(krate) => krate
                .modules
                .iter()
                .map(|m| format!("{} in {}\n", m.name(), m.file.display()))
                .collect(),
            Err(e) => format!("{e}\n"),
        };
        expect.assert_eq(&out);
    }

    #[test]
    fn module_files() {
        let fixture = r#"
//- src/lib.rs
mod flat;
mod nested;
mod inline { mod deep; }
#[path = "elsewhere/named.rs"]
mod renamed;
//- src/flat.rs
mod child;
//- src/flat/child.rs
//- src/nested/mod.rs
mod child;
//- src/nested/child.rs
//- src/inline/deep.rs
//- src/elsewhere/named.rs
mod beside;
//- src/elsewhere/beside.rs
//- src/bin/tool.rs
mod helper;
//- src/bin/helper.rs
"#;
        check_tree(
            fixture,
            "src/lib.rs",
            expect![[r#"
                crate in src/lib.rs
                flat in src/flat.rs
                flat::child in src/flat/child.rs
                nested in src/nested/mod.rs
                nested::child in src/nested/child.rs
                inline in src/lib.rs
                inline::deep in src/inline/deep.rs
                renamed in src/elsewhere/named.rs
                renamed::beside in src/elsewhere/beside.rs
            "#]],
        );
        check_tree(
            fixture,
            "src/bin/tool.rs",
            expect![[r#"
                crate in src/bin/tool.rs
                helper in src/bin/helper.rs
            "#]],
        );
        check_tree(
            "//- src/lib.rs\nmod two;\n//- src/two.rs\n//- src/two/mod.rs\n",
            "src/lib.rs",
            expect![[r#"
                module `two` has two files, src/two.rs and src/two/mod.rs
            "#]],
        );
    }

    #[test]
    fn longest_module_prefix() {
        check_refs(
            r#"
//- src/lib.rs
mod exec;
mod job;
//- src/exec/mod.rs
mod home;
//- src/exec/home.rs
//- src/job.rs
use crate::exec::home::relay;
use crate::exec::Frame;
fn f() { crate::exec::home::Relay::new(); crate::exec::away::x(); }
"#,
            expect![[r#"
                src/job.rs:1 crate::exec::home::relay in job: exec::home (job -> exec)
                src/job.rs:2 crate::exec::Frame in job: exec (job -> exec)
                src/job.rs:3 crate::exec::home::Relay::new in job: exec::home (job -> exec)
                src/job.rs:3 crate::exec::away::x in job: exec (job -> exec)
            "#]],
        );
    }

    #[test]
    fn lifting_to_siblings_and_the_tree() {
        check_refs(
            r#"
//- src/lib.rs
pub mod agent;
pub mod exec;
use exec::migrate::Plan;
//- src/agent/mod.rs
pub mod admission;
pub mod control;
use self::admission::Book;
//- src/agent/admission.rs
use super::control::Server;
use crate::exec::migrate::Plan;
use super::Shared;
use crate::agent::Shared;
//- src/agent/control.rs
//- src/exec/mod.rs
pub mod migrate;
//- src/exec/migrate.rs
use crate::agent::admission::Book;
"#,
            expect![[r#"
                src/lib.rs:3 exec::migrate::Plan in crate: exec::migrate (tree)
                src/agent/mod.rs:3 self::admission::Book in agent: agent::admission (tree)
                src/agent/admission.rs:1 super::control::Server in agent::admission: agent::control (agent::admission -> agent::control)
                src/agent/admission.rs:2 crate::exec::migrate::Plan in agent::admission: exec::migrate (agent -> exec)
                src/agent/admission.rs:3 super::Shared in agent::admission: agent (tree)
                src/agent/admission.rs:4 crate::agent::Shared in agent::admission: agent (tree)
                src/exec/migrate.rs:1 crate::agent::admission::Book in exec::migrate: agent::admission (exec -> agent)
            "#]],
        );
    }

    #[test]
    fn names_bound_by_use_and_globs() {
        check_refs(
            r#"
//- src/lib.rs
mod exec;
mod job;
mod agent;
pub use agent::Server;
//- src/agent.rs
//- src/exec/mod.rs
mod migrate;
mod target;
use crate::job as j;
fn f() { j::holder::Holder::new(); tokio::spawn(); }
//- src/exec/migrate.rs
use super::*;
fn g() -> target::Ack { crate::Server::new() }
//- src/exec/target.rs
//- src/job/mod.rs
pub mod holder;
//- src/job/holder.rs
"#,
            expect![[r#"
                src/lib.rs:4 agent::Server in crate: agent (tree)
                src/exec/mod.rs:3 crate::job in exec: job (exec -> job)
                src/exec/mod.rs:4 j::holder::Holder::new in exec: job::holder (exec -> job)
                src/exec/migrate.rs:1 super in exec::migrate: exec (tree)
                src/exec/migrate.rs:2 target::Ack in exec::migrate: exec::target (exec::migrate -> exec::target)
                src/exec/migrate.rs:2 crate::Server::new in exec::migrate: agent (exec -> agent)
            "#]],
        );
    }

    #[test]
    fn a_use_in_a_function_is_not_a_re_export() {
        // `crate::b::Thing` is b's own struct: the `use` in `f` binds the
        // name only inside `f`, whose path still counts as b's.
        check_refs(
            r#"
//- src/lib.rs
mod a { fn g() -> crate::b::Thing { todo!() } }
mod b {
    pub struct Thing;
    fn f() { use crate::c::Thing; Thing::new(); }
}
mod c {}
"#,
            expect![[r#"
                src/lib.rs:1 crate::b::Thing in a: b (a -> b)
                src/lib.rs:4 crate::c::Thing in b: c (b -> c)
                src/lib.rs:4 Thing::new in b: c (b -> c)
            "#]],
        );
    }

    #[test]
    fn inline_modules_and_test_code() {
        check_refs(
            r#"
//- src/lib.rs
pub mod wire {
    pub mod opt { use crate::dhcp::Engine; }
}
mod dhcp;
//- src/dhcp.rs
use crate::wire::opt::Code;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod inline_tests { use crate::wire::X; }
//- src/dhcp/tests.rs
this file is never read: it is test code
"#,
            expect![[r#"
                src/lib.rs:2 crate::dhcp::Engine in wire::opt: dhcp (wire -> dhcp)
                src/dhcp.rs:1 crate::wire::opt::Code in dhcp: wire::opt (dhcp -> wire)
            "#]],
        );
    }

    #[test]
    fn cycles_through_lifted_edges() {
        // exec -> job -> job::holder -> exec: a cycle between exec and job.
        check_cycles(
            r#"
//- src/lib.rs
mod exec;
mod job;
mod plain;
//- src/exec/mod.rs
mod migrate;
mod target;
use crate::job::Holder;
use crate::plain::X;
//- src/exec/migrate.rs
use super::target::{
    Ack,
    Nack,
};
//- src/exec/target.rs
use crate::exec::migrate::Plan;
//- src/job.rs
pub mod holder;
pub use holder::Holder;
//- src/job/holder.rs
// use crate::plain::X; is only a comment
use crate::exec::Frame;
fn f() -> crate::exec::Frame { todo!() }
//- src/plain.rs
const DOC: &str = "crate::exec::Frame";
"#,
            expect![[r#"
                exec -> job -> exec (src/exec/mod.rs:3 uses crate::job::Holder; src/job/holder.rs:2 uses crate::exec::Frame, and 1 more)
                exec::migrate -> exec::target -> exec::migrate (src/exec/migrate.rs:2 uses super::target::Ack, and 1 more; src/exec/target.rs:1 uses crate::exec::migrate::Plan)
            "#]],
        );
    }

    #[test]
    fn every_edge_of_a_component_is_shown() {
        // a <-> b and b <-> c: one component, two cycles.
        check_cycles(
            r#"
//- src/lib.rs
mod a { use crate::b::B; }
mod b { use crate::a::A; use crate::c::C; }
mod c { use crate::b::B; }
mod d { use crate::a::A; }
"#,
            expect![[r#"
                a -> b -> a (src/lib.rs:1 uses crate::b::B; src/lib.rs:2 uses crate::a::A)
                b -> c -> b (src/lib.rs:2 uses crate::c::C; src/lib.rs:3 uses crate::b::B)
            "#]],
        );
    }

    #[test]
    fn no_cycle_in_a_tree() {
        check_cycles(
            r#"
//- src/lib.rs
pub mod a;
pub mod b;
pub use a::inner::Thing;
//- src/a.rs
pub mod inner;
use self::inner::Thing;
//- src/a/inner.rs
use super::super::b::Other;
use super::*;
//- src/b.rs
"#,
            expect![[""]],
        );
    }
}
