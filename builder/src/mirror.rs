//! Finding the Debian mirror: the recipe's `mirror`, else `--mirror`, else the
//! first `deb` source in the host's apt configuration that carries the
//! recipe's suite (so security and third-party sources are skipped).
//! Both apt formats are read: one-line `sources.list` and deb822 `.sources`.
//! No mirror name is ever written into the repository.

use std::path::Path;

use crate::debian::{field, paragraphs};

/// One apt source entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Base URI.
    pub uri: String,
    /// Suites.
    pub suites: Vec<String>,
    /// Components.
    pub components: Vec<String>,
}

/// Parse a one-line-format `sources.list`.
pub fn parse_list(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace().peekable();
        if words.next() != Some("deb") {
            continue;
        }
        // Options: "[arch=amd64 signed-by=…]" may span several words.
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(Source {
            uri: uri.to_string(),
            suites: vec![suite.to_string()],
            components: words.map(str::to_string).collect(),
        });
    }
    out
}

/// Parse a deb822 `.sources` file.
pub fn parse_deb822(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for p in paragraphs(text) {
        if field(&p, "Enabled").is_some_and(|v| v.eq_ignore_ascii_case("no")) {
            continue;
        }
        let types = field(&p, "Types").unwrap_or("");
        if !types.split_whitespace().any(|t| t == "deb") {
            continue;
        }
        let words = |f| {
            field(&p, f)
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        for uri in words("URIs") {
            out.push(Source {
                uri,
                suites: words("Suites"),
                components: words("Components"),
            });
        }
    }
    out
}

/// All sources under an apt configuration root (normally `/etc/apt`), in
/// apt's order: `sources.list`, then `sources.list.d/*` sorted by name.
pub fn host_sources(apt_dir: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    if let Ok(t) = std::fs::read_to_string(apt_dir.join("sources.list")) {
        out.extend(parse_list(&t));
    }
    let mut files: Vec<_> = std::fs::read_dir(apt_dir.join("sources.list.d"))
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        let Ok(t) = std::fs::read_to_string(&f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("sources") => out.extend(parse_deb822(&t)),
            Some("list") => out.extend(parse_list(&t)),
            _ => {}
        }
    }
    out
}

/// The first source that serves `suite` over plain HTTP, without a trailing `/`.
pub fn pick(sources: &[Source], suite: &str) -> Option<String> {
    sources
        .iter()
        .find(|s| s.uri.starts_with("http://") && s.suites.iter().any(|x| x == suite))
        .map(|s| s.uri.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_source_with_the_suite_wins() {
        let list = parse_list(
            "# comment\ndeb-src http://src.example/debian bookworm main\n\
             deb [arch=amd64 signed-by=/x.gpg] http://sec.example/debian-security bookworm-security main\n\
             deb http://one.example/debian/ bookworm main contrib\n",
        );
        let d822 = parse_deb822(
            "Types: deb\nURIs: http://third.example/node\nSuites: nodistro\nComponents: main\n\n\
             Types: deb deb-src\nURIs: http://two.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n",
        );
        assert_eq!(list[1].components, ["main", "contrib"]);
        assert_eq!(
            pick(&list, "bookworm").as_deref(),
            Some("http://one.example/debian")
        );
        assert_eq!(
            pick(&d822, "bookworm").as_deref(),
            Some("http://two.example/debian")
        );
        assert_eq!(pick(&d822, "trixie"), None);
    }
}
