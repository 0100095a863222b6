//! The module tree of one crate: from its root file, every module its
//! `mod` declarations reach, each with its own source read by
//! [`crate::syntax`]. Pure over a [`Files`] reader, so the tests feed it
//! files from memory.
//!
//! Where a module's file is follows rustc: the children of `lib.rs`,
//! `main.rs`, `bin/x.rs`, `mod.rs` and of a `#[path]` file are beside it,
//! the children of `foo.rs` are in `foo/`, the children of an inline
//! `mod x { … }` in the directory its own file would have; `mod foo;` is
//! `foo.rs` or `foo/mod.rs`, and both existing is an error. Modules skipped
//! as test code by [`crate::syntax`] are not read at all (`#[cfg(test)]
//! mod tests;` and its `tests.rs`).

use crate::syntax::{self, ModBody};
use crate::Error;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Reads the files a crate is made of.
pub trait Files {
    /// The text of the file at `path`, or `None` if there is no such file.
    fn read(&self, path: &Path) -> Result<Option<String>, Error>;
}

/// One crate: a library or a binary, with its modules.
#[derive(Debug)]
pub struct Crate {
    /// What the report calls it: `node-agent`, `node-agent (bin omctl)`.
    pub name: String,
    /// Its modules, the root first; a module's parent comes before it.
    pub modules: Vec<Module>,
}

/// One module of a [`Crate`].
#[derive(Debug)]
pub struct Module {
    /// Its path below the crate root: empty for the root, `["exec", "home"]`
    /// for `crate::exec::home`.
    pub path: Vec<String>,
    /// The file its source is in (an inline module's is its parent's).
    pub file: PathBuf,
    /// Its parent's index, `None` for the root.
    pub parent: Option<usize>,
    /// Its children's indices by name.
    pub children: BTreeMap<String, usize>,
    /// Its own source, without its children's.
    pub source: syntax::Module,
}

impl Module {
    /// `exec::home`, or `crate` for the root.
    pub fn name(&self) -> String {
        if self.path.is_empty() {
            "crate".to_string()
        } else {
            self.path.join("::")
        }
    }
}

/// Where a module is: its path, its file, its parent, where its children's
/// files are, and whether it is an inline `mod x { … }` (where `#[path]`
/// is not supported).
struct Place {
    path: Vec<String>,
    file: PathBuf,
    parent: Option<usize>,
    dir: PathBuf,
    inline: bool,
}

impl Crate {
    /// Reads the crate whose root file is `root` (`src/lib.rs`,
    /// `src/bin/x.rs`…).
    pub fn load(name: &str, root: &Path, files: &dyn Files) -> Result<Crate, Error> {
        let text = files.read(root)?.ok_or_else(|| Error::MissingRoot {
            path: root.to_path_buf(),
        })?;
        let source = parse(root, &text)?;
        let mut krate = Crate {
            name: name.to_string(),
            modules: Vec::new(),
        };
        let place = Place {
            path: Vec::new(),
            file: root.to_path_buf(),
            parent: None,
            dir: root.parent().unwrap_or(Path::new("")).to_path_buf(),
            inline: false,
        };
        krate.add(place, source, files)?;
        Ok(krate)
    }

    /// Adds a module and, depth first, its children; returns its index.
    fn add(
        &mut self,
        place: Place,
        mut source: syntax::Module,
        files: &dyn Files,
    ) -> Result<usize, Error> {
        let index = self.modules.len();
        let decls = std::mem::take(&mut source.mods);
        self.modules.push(Module {
            path: place.path.clone(),
            file: place.file.clone(),
            parent: place.parent,
            children: BTreeMap::new(),
            source,
        });
        for decl in decls {
            let mut path = place.path.clone();
            path.push(decl.name.clone());
            let dir = place.dir.join(&decl.name);
            let (file, inner, inline, dir) = match decl.body {
                ModBody::Inline(inner) => (place.file.clone(), inner, true, dir),
                ModBody::File(Some(attr)) => {
                    if place.inline {
                        return Err(Error::Unsupported {
                            file: place.file.clone(),
                            line: decl.line,
                            what: "#[path] on a module inside an inline module".to_string(),
                        });
                    }
                    let at = place.file.parent().unwrap_or(Path::new("")).join(attr);
                    let text = files.read(&at)?.ok_or_else(|| Error::MissingModule {
                        module: path.join("::"),
                        file: place.file.clone(),
                        line: decl.line,
                        tried: vec![at.clone()],
                    })?;
                    let inner = parse(&at, &text)?;
                    // A `#[path]` file's children are beside it, as a mod.rs's.
                    let own_dir = at.parent().unwrap_or(Path::new("")).to_path_buf();
                    (at, inner, false, own_dir)
                }
                ModBody::File(None) => {
                    let flat = place.dir.join(format!("{}.rs", decl.name));
                    let nested = dir.join("mod.rs");
                    let (at, text) = match (files.read(&flat)?, files.read(&nested)?) {
                        (Some(text), None) => (flat, text),
                        (None, Some(text)) => (nested, text),
                        (Some(_), Some(_)) => {
                            return Err(Error::AmbiguousModule {
                                module: path.join("::"),
                                files: [flat, nested],
                            })
                        }
                        (None, None) => {
                            return Err(Error::MissingModule {
                                module: path.join("::"),
                                file: place.file.clone(),
                                line: decl.line,
                                tried: vec![flat, nested],
                            })
                        }
                    };
                    (at.clone(), parse(&at, &text)?, false, dir)
                }
            };
            if inner.test_only {
                continue;
            }
            let child = Place {
                path,
                file,
                parent: Some(index),
                dir,
                inline,
            };
            let child = self.add(child, inner, files)?;
            self.modules[index].children.insert(decl.name, child);
        }
        Ok(index)
    }

    /// Whether module `a` is `b` or one of its ancestors.
    pub fn is_ancestor_or_self(&self, a: usize, b: usize) -> bool {
        let mut at = Some(b);
        while let Some(m) = at {
            if m == a {
                return true;
            }
            at = self.modules[m].parent;
        }
        false
    }

    /// The chain of modules from the root down to `m`, both included.
    pub fn lineage(&self, m: usize) -> Vec<usize> {
        let mut chain = vec![m];
        while let Some(p) = self.modules[*chain.last().unwrap_or(&0)].parent {
            chain.push(p);
        }
        chain.reverse();
        chain
    }
}

fn parse(path: &Path, text: &str) -> Result<syntax::Module, Error> {
    syntax::parse(text).map_err(|e| Error::Lex {
        file: path.to_path_buf(),
        line: e.line,
    })
}
