//! Finds import cycles between the modules of each crate of a workspace,
//! so that ARCHITECTURE.md's invariant "no import cycles, between crates
//! or between the modules of one crate" stays true (cargo already refuses
//! cycles between crates).
//!
//! The rule, in short: the `mod` declarations make a tree; a path that
//! module A writes and that names module B (`use crate::b::…`,
//! `super::b::…`, `crate::b::f()`, a re-export that leads to B) is an edge
//! from A to B, unless one of them contains the other (a parent and its
//! children use each other freely); the edge is lifted to the two children
//! of their lowest common ancestor that contain them, so it always joins
//! two siblings; a cycle of such edges is an error. Test code
//! (`#[cfg(test)]` items, so `#[cfg(test)] mod tests;` and its `tests.rs`)
//! is not part of the graph. [`graph`] has the details.
//!
//! - [`syntax`]: what one file says: `mod` declarations, `use` trees and
//!   paths, read from Rust tokens (comments and strings cannot fool it).
//! - [`tree`]: a crate's module tree, from its root file, over a [`tree::Files`]
//!   reader.
//! - [`graph`]: paths resolved to modules, edges lifted to siblings, the
//!   cycles.
//! - [`workspace`]: the crates of a workspace from its `Cargo.toml`s, and
//!   the file system as a reader.
//!
//! [`check`] puts them together; the `modcheck` binary prints its
//! [`Report`].

pub mod graph;
pub mod syntax;
pub mod tree;
pub mod workspace;

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a workspace could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory exists but cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A `Cargo.toml` is not what modcheck understands.
    #[error("{}: {message}", path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A crate's root file does not exist.
    #[error("crate root {} does not exist", path.display())]
    MissingRoot {
        /// The root file.
        path: PathBuf,
    },
    /// A file is not a sequence of Rust tokens (an unclosed bracket or
    /// string).
    #[error("{}:{line}: not Rust tokens (an unclosed bracket, string or comment?)", file.display())]
    Lex {
        /// The file.
        file: PathBuf,
        /// The line the lexer points at.
        line: usize,
    },
    /// `mod x;` with no file for `x`.
    #[error(
        "module `{module}` declared at {}:{line} has no file (tried {})",
        file.display(),
        tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and ")
    )]
    MissingModule {
        /// The module's path in its crate.
        module: String,
        /// The file declaring it.
        file: PathBuf,
        /// The line of the declaration.
        line: usize,
        /// The files looked for.
        tried: Vec<PathBuf>,
    },
    /// `mod x;` with both `x.rs` and `x/mod.rs`.
    #[error("module `{module}` has two files, {} and {}", files[0].display(), files[1].display())]
    AmbiguousModule {
        /// The module's path in its crate.
        module: String,
        /// The two files.
        files: [PathBuf; 2],
    },
    /// Something rustc accepts that modcheck does not read.
    #[error("{}:{line}: {what} is not supported", file.display())]
    Unsupported {
        /// The file.
        file: PathBuf,
        /// The line.
        line: usize,
        /// What.
        what: String,
    },
}

/// What [`check`] found.
#[derive(Debug)]
pub struct Report {
    /// How many crates were read (a package's library and each binary are
    /// crates of their own).
    pub crates: usize,
    /// How many modules they have, roots included.
    pub modules: usize,
    /// Each crate's name with one of its cycles, in member order.
    pub cycles: Vec<(String, graph::Cycle)>,
}

impl fmt::Display for Report {
    /// One line a cycle, or one summary line when there is none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.cycles.is_empty() {
            let plural =
                |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
            return writeln!(
                f,
                "modcheck: {}, {}, no import cycles",
                plural(self.crates, "crate"),
                plural(self.modules, "module")
            );
        }
        for (krate, cycle) in &self.cycles {
            writeln!(f, "{krate}: {cycle}")?;
        }
        Ok(())
    }
}

/// Checks every crate of the workspace (or package) at `root`. The paths
/// in the report are relative to `root`.
pub fn check(root: &Path) -> Result<Report, Error> {
    let files = workspace::Disk {
        root: root.to_path_buf(),
    };
    let mut report = Report {
        crates: 0,
        modules: 0,
        cycles: Vec::new(),
    };
    for target in workspace::targets(root)? {
        let krate = tree::Crate::load(&target.name, &target.root, &files)?;
        report.crates += 1;
        report.modules += krate.modules.len();
        let graph = graph::Graph::new(&krate);
        report.cycles.extend(
            graph
                .cycles(&krate)
                .into_iter()
                .map(|c| (target.name.clone(), c)),
        );
    }
    Ok(report)
}
