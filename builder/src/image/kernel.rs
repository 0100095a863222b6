//! Stage **kernel**: the kernel image and the modules the initramfs gets.
//!
//! The kernel tree must hold exactly one `boot/vmlinuz-*`; its suffix is the
//! kernel release. The recipe's module sets and globs are resolved against
//! `lib/modules/<release>/` with [`modules::select`], which adds their
//! dependencies and writes `modules.dep` and `modules.alias`; the kernel
//! package's own `modules.builtin*` and `modules.order` are kept.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Error;
use crate::modules;
use crate::recipe::Recipe;
use crate::tree::{Node, Tree};

/// What the kernel stage leaves.
pub(super) struct Kernel {
    /// The kernel release (`6.1.0-NN-amd64`).
    pub(super) version: String,
    /// The kernel image.
    pub(super) vmlinuz: Arc<Vec<u8>>,
    /// The selected module files, by path below `lib/modules/<release>/`.
    pub(super) modules: Vec<(String, Arc<Vec<u8>>)>,
    /// The index and list files for `lib/modules/<release>/` (name → contents).
    pub(super) indexes: Vec<(String, Vec<u8>)>,
}

/// Find the kernel in the kernel packages' tree and select the recipe's
/// modules from it.
pub(super) fn select(recipe: &Recipe, tree: &Tree) -> Result<Kernel, Error> {
    let vmlinuz: Vec<(&str, Arc<Vec<u8>>)> = tree
        .under("boot")
        .filter_map(|(p, e)| match &e.node {
            Node::File(d) if p.starts_with("boot/vmlinuz-") => Some((p, d.clone())),
            _ => None,
        })
        .collect();
    let [(vmlinuz_path, vmlinuz)] = vmlinuz.as_slice() else {
        return Err(Error::Kernel {
            package: recipe.kernel_package.clone(),
            count: vmlinuz.len(),
        });
    };
    let version = vmlinuz_path.trim_start_matches("boot/vmlinuz-").to_string();
    let mdir = format!("lib/modules/{version}");
    let available: BTreeMap<String, &[u8]> = tree
        .under(&mdir)
        .filter_map(|(p, e)| match &e.node {
            Node::File(d) if p.ends_with(".ko") => {
                Some((p[mdir.len() + 1..].to_string(), d.as_slice()))
            }
            _ => None,
        })
        .collect();
    let builtin_text = tree
        .file(&format!("{mdir}/modules.builtin"))
        .unwrap_or_default();
    let builtin = modules::parse_builtin(&String::from_utf8_lossy(&builtin_text));
    let mut patterns: Vec<String> = Vec::new();
    for set in &recipe.module_sets {
        let (_, pats) = modules::SETS
            .iter()
            .find(|(n, _)| n == set)
            .expect("validated by the recipe");
        patterns.extend(pats.iter().map(|p| p.to_string()));
    }
    patterns.extend(recipe.modules.iter().cloned());
    let selection = modules::select(&available, &patterns, &builtin)?;
    let module_files = selection
        .modules
        .iter()
        .map(|p| {
            (
                p.clone(),
                tree.file(&format!("{mdir}/{p}"))
                    .expect("selected from this tree"),
            )
        })
        .collect();
    let mut indexes = vec![
        ("modules.dep".to_string(), selection.dep.into_bytes()),
        ("modules.alias".to_string(), selection.alias.into_bytes()),
    ];
    for name in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        if let Some(d) = tree.file(&format!("{mdir}/{name}")) {
            indexes.push((name.to_string(), d.as_ref().clone()));
        }
    }
    Ok(Kernel {
        version,
        vmlinuz: vmlinuz.clone(),
        modules: module_files,
        indexes,
    })
}
