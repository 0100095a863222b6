//! Debian archive metadata: deb822 control paragraphs, the `Release` file's
//! hash list, `Packages` stanzas and dependency fields. Pure parsing; the
//! signature check of `InRelease` lives in [`crate::openpgp`], fetching in
//! [`crate::fetch`].

use std::collections::BTreeMap;

use crate::version::Relation;

/// Errors from parsing archive metadata.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetaError {
    /// A stanza lacks a field every stanza of its kind must have.
    #[error("{what}: missing field {field}")]
    MissingField {
        /// Which stanza (e.g. the package name or "Release").
        what: String,
        /// The field.
        field: &'static str,
    },
    /// A field's value does not parse.
    #[error("{what}: bad {field} field {value:?}")]
    BadField {
        /// Which stanza.
        what: String,
        /// The field.
        field: &'static str,
        /// The offending value.
        value: String,
    },
}

/// One deb822 paragraph: field names (case kept) to values; continuation
/// lines are joined with `\n`.
pub type Paragraph<'a> = Vec<(&'a str, String)>;

/// Split deb822 text into paragraphs.
pub fn paragraphs(text: &str) -> Vec<Paragraph<'_>> {
    let mut out = Vec::new();
    let mut cur: Paragraph<'_> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else if line.starts_with('#') {
            continue;
        } else if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(last) = cur.last_mut() {
                last.1.push('\n');
                last.1.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            cur.push((k.trim(), v.trim().to_string()));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Case-insensitive field lookup.
pub fn field<'p>(p: &'p Paragraph<'_>, name: &str) -> Option<&'p str> {
    p.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// An index file listed in `Release` with its SHA256 and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Hex SHA256.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// The parts of a `Release` file the builder uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// `Codename` (e.g. `bookworm`).
    pub codename: Option<String>,
    /// `Suite` (e.g. `stable`).
    pub suite: Option<String>,
    /// The SHA256 section: path relative to the dists directory → entry.
    pub sha256: BTreeMap<String, IndexEntry>,
}

/// Parse a (verified) `Release` text.
pub fn parse_release(text: &str) -> Result<Release, MetaError> {
    let paras = paragraphs(text);
    let p = paras.first().ok_or(MetaError::MissingField {
        what: "Release".into(),
        field: "SHA256",
    })?;
    let list = field(p, "SHA256").ok_or(MetaError::MissingField {
        what: "Release".into(),
        field: "SHA256",
    })?;
    let mut sha256 = BTreeMap::new();
    for line in list.lines().filter(|l| !l.trim().is_empty()) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let bad = || MetaError::BadField {
            what: "Release".into(),
            field: "SHA256",
            value: line.to_string(),
        };
        if parts.len() != 3 || parts[0].len() != 64 {
            return Err(bad());
        }
        let size = parts[1].parse().map_err(|_| bad())?;
        sha256.insert(
            parts[2].to_string(),
            IndexEntry {
                sha256: parts[0].to_ascii_lowercase(),
                size,
            },
        );
    }
    Ok(Release {
        codename: field(p, "Codename").map(str::to_string),
        suite: field(p, "Suite").map(str::to_string),
        sha256,
    })
}

/// One alternative of a dependency: `name[:arch] [(op version)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternative {
    /// The package (or virtual package) name.
    pub name: String,
    /// A version constraint.
    pub constraint: Option<(Relation, String)>,
}

/// A dependency: one of the alternatives must be satisfied (`a | b`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The alternatives in order of preference.
    pub alternatives: Vec<Alternative>,
}

impl std::fmt::Display for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, a) in self.alternatives.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            f.write_str(&a.name)?;
            if let Some((rel, v)) = &a.constraint {
                let op = match rel {
                    Relation::Less => "<<",
                    Relation::LessEq => "<=",
                    Relation::Eq => "=",
                    Relation::GreaterEq => ">=",
                    Relation::Greater => ">>",
                };
                write!(f, " ({op} {v})")?;
            }
        }
        Ok(())
    }
}

/// Parse a `Depends`-style field (comma-separated groups of `|` alternatives).
/// Architecture qualifiers (`:any`) and restriction lists (`[…]`, `<…>`) are
/// dropped: the builder works on one architecture and no build profiles.
pub fn parse_depends(
    what: &str,
    fieldname: &'static str,
    value: &str,
) -> Result<Vec<Dependency>, MetaError> {
    let mut out = Vec::new();
    for group in value.split(',') {
        let group = group.trim();
        if group.is_empty() {
            continue;
        }
        let mut alternatives = Vec::new();
        for alt in group.split('|') {
            alternatives.push(parse_alternative(alt).ok_or_else(|| MetaError::BadField {
                what: what.to_string(),
                field: fieldname,
                value: group.to_string(),
            })?);
        }
        out.push(Dependency { alternatives });
    }
    Ok(out)
}

fn parse_alternative(alt: &str) -> Option<Alternative> {
    let alt = alt.trim();
    let name_end = alt
        .find(|c: char| c.is_whitespace() || matches!(c, '(' | '[' | '<'))
        .unwrap_or(alt.len());
    let name = alt[..name_end].split(':').next().unwrap_or("");
    if name.is_empty() {
        return None;
    }
    let rest = alt[name_end..].trim_start();
    let (constraint, rest) = if let Some(r) = rest.strip_prefix('(') {
        let close = r.find(')')?;
        let inner = r[..close].trim();
        let split = inner.find(|c: char| !matches!(c, '<' | '>' | '='))?;
        let rel = Relation::parse(inner[..split].trim())?;
        let version = inner[split..].trim();
        if version.is_empty() || version.contains(char::is_whitespace) {
            return None;
        }
        (
            Some((rel, version.to_string())),
            r[close + 1..].trim_start(),
        )
    } else {
        (None, rest)
    };
    // Only architecture ("[…]") and profile ("<…>") restrictions may follow.
    if !(rest.is_empty() || rest.starts_with('[') || rest.starts_with('<')) {
        return None;
    }
    Some(Alternative {
        name: name.to_string(),
        constraint,
    })
}

/// One binary package stanza from a `Packages` index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// `Package`
    pub name: String,
    /// `Version`
    pub version: String,
    /// `Architecture` (`amd64`, `all`, …)
    pub architecture: String,
    /// `Filename`, relative to the mirror root.
    pub filename: String,
    /// `Size`
    pub size: u64,
    /// `SHA256`, lowercase hex.
    pub sha256: String,
    /// `Pre-Depends` then `Depends`.
    pub depends: Vec<Dependency>,
    /// `Provides`: names (with an optional `= version`).
    pub provides: Vec<Alternative>,
    /// `Essential: yes`: part of every Debian system.
    pub essential: bool,
}

/// Parse a `Packages` index.
pub fn parse_packages(text: &str) -> Result<Vec<Package>, MetaError> {
    let mut out = Vec::new();
    for p in paragraphs(text) {
        let Some(name) = field(&p, "Package") else {
            continue;
        };
        let req = |f: &'static str| {
            field(&p, f).ok_or_else(|| MetaError::MissingField {
                what: name.to_string(),
                field: f,
            })
        };
        let mut depends = Vec::new();
        if let Some(v) = field(&p, "Pre-Depends") {
            depends.extend(parse_depends(name, "Pre-Depends", v)?);
        }
        if let Some(v) = field(&p, "Depends") {
            depends.extend(parse_depends(name, "Depends", v)?);
        }
        let provides = match field(&p, "Provides") {
            Some(v) => parse_depends(name, "Provides", v)?
                .into_iter()
                .flat_map(|d| d.alternatives)
                .collect(),
            None => Vec::new(),
        };
        let size = req("Size")?;
        out.push(Package {
            name: name.to_string(),
            version: req("Version")?.to_string(),
            architecture: req("Architecture")?.to_string(),
            filename: req("Filename")?.to_string(),
            size: size.parse().map_err(|_| MetaError::BadField {
                what: name.to_string(),
                field: "Size",
                value: size.to_string(),
            })?,
            sha256: req("SHA256")?.to_ascii_lowercase(),
            depends,
            provides,
            essential: field(&p, "Essential") == Some("yes"),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_fields_parse() {
        let deps = parse_depends(
            "x",
            "Depends",
            "libc6 (>= 2.34), 0ad-data (<= 0.0.26-3), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, python3:any, foo [amd64] <!nocheck>",
        )
        .unwrap();
        let shown: Vec<String> = deps.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            shown,
            [
                "libc6 (>= 2.34)",
                "0ad-data (<= 0.0.26-3)",
                "initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool",
                "python3",
                "foo"
            ]
        );
        assert!(parse_depends("x", "Depends", "libc6 (>= )").is_err());
        assert!(parse_depends("x", "Depends", "a b").is_err());
    }

    #[test]
    fn release_hashes() {
        let r = parse_release(
            "Codename: bookworm\nSHA256:\n 0123456789012345678901234567890123456789012345678901234567890123 12 main/binary-amd64/Packages.xz\n",
        )
        .unwrap();
        assert_eq!(r.codename.as_deref(), Some("bookworm"));
        assert_eq!(r.sha256["main/binary-amd64/Packages.xz"].size, 12);
        assert!(parse_release("Codename: x\n").is_err());
    }
}
