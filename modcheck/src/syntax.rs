//! What one module's source says, as far as the module graph goes: the
//! modules it declares, the names its `use` declarations bind, and every
//! path it writes. Pure: text in, [`Module`] out.
//!
//! The text is read as Rust tokens by `proc-macro2`'s lexer (the one `syn`
//! uses), so comments, doc comments, strings, raw strings and char literals
//! are never mistaken for paths, and brackets come back as balanced groups.
//! On those tokens this module does a shallow reading of items, not a full
//! parse:
//!
//! - an item ends at its first `;` or, for items that may end in a block
//!   (`fn`, `mod`, `impl`, `struct`…), after its first `{…}`; `use`,
//!   `const`, `static`, `type`, `let` and `extern crate` end only at `;`;
//! - an item whose outer attributes include `#[cfg(test)]` (or
//!   `#[cfg(all(test, …))]`) is skipped whole, and a file whose inner
//!   attributes include `#![cfg(test)]` is test-only: test code is not part
//!   of the module graph. This is done for items at module level (where
//!   this workspace puts its `#[cfg(test)] mod tests`), not for statements
//!   or fields inside other items;
//! - `mod NAME;` and `mod NAME { … }` at module level are declarations,
//!   with their `#[path = "…"]` if any; an inline module's items are read
//!   into a [`Module`] of their own;
//! - anywhere else, at any depth, a `use` declaration is read as a tree
//!   (`use crate::{a, b::{self, c as d}, e::*};`, across lines) into
//!   [`Use`]s, and any other `NAME::NAME…` sequence that does not continue
//!   a longer path (or follow a `.`) is a [`PathRef`]: `crate::job::run()`,
//!   `super::target::Ack`, `$crate::x`, `exec::Frame` in a type. A path
//!   starting with `::` names another crate and is dropped.

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};

/// One module's own source: what a file says, or the inside of `mod x {…}`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Module {
    /// The modules declared here, in order.
    pub mods: Vec<ModDecl>,
    /// The leaves of every `use` declaration, in order.
    pub uses: Vec<Use>,
    /// Every other path of two or more segments, in order.
    pub paths: Vec<PathRef>,
    /// The file says `#![cfg(test)]`: it is test code.
    pub test_only: bool,
}

/// A `mod` declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModDecl {
    /// The module's name (`r#` stripped).
    pub name: String,
    /// The line of the `mod` keyword.
    pub line: usize,
    /// Where its items are.
    pub body: ModBody,
}

/// Where a declared module's items are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModBody {
    /// `mod x;`: in a file of its own; `#[path = "…"]` if given.
    File(Option<String>),
    /// `mod x { … }`: right here.
    Inline(Module),
}

/// One leaf of a `use` tree, with the prefix of its groups spelled out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    /// The full path: `use crate::{a::b as c};` gives `crate::a::b`.
    pub path: Path,
    /// The name it binds.
    pub binds: Binding,
    /// Declared inside another item (a function's body): the name is not
    /// one the module binds for others to name.
    pub nested: bool,
}

/// The name a [`Use`] binds in the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// `use a::b;` binds `b`, `use a::b as c;` binds `c`, `use a::{self};`
    /// binds `a`.
    Name(String),
    /// `use a::*;`: every public name of `a`.
    Glob,
    /// `use a::B as _;`: nothing nameable.
    Hidden,
}

/// A path written in the source, outside `use`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRef {
    /// Its segments, as written.
    pub path: Path,
}

/// A path's segments and the line of its last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// `crate`, `super`, `self` or a name first; never empty.
    pub segments: Vec<String>,
    /// The line of its last segment (a long `use` spans lines).
    pub line: usize,
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.segments.join("::"))
    }
}

/// The text is not a sequence of Rust tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    /// The line the lexer points at (for an unclosed bracket, where it
    /// opens).
    pub line: usize,
}

/// The tokens inside an inline module's braces.
type Block = Vec<TokenTree>;

/// Reads one file's text.
pub fn parse(text: &str) -> Result<Module, LexError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // A shebang line is not a token; `#![attr]` is, and stays.
    let text = match text.strip_prefix("#!") {
        Some(rest) if !rest.trim_start().starts_with('[') => {
            let newline = text.find('\n').unwrap_or(text.len());
            // Keep the newline so that line numbers stay right.
            &text[newline..]
        }
        _ => text,
    };
    let stream: TokenStream = text.parse().map_err(|e: proc_macro2::LexError| LexError {
        line: e.span().start().line,
    })?;
    let tokens: Vec<TokenTree> = stream.into_iter().collect();
    let mut module = Module::default();
    read_items(&tokens, &mut module);
    Ok(module)
}

/// Reads a sequence of items (a file, or an inline module's block).
fn read_items(tokens: &[TokenTree], module: &mut Module) {
    let mut i = 0;
    let mut test = false;
    let mut path_attr = None;
    while i < tokens.len() {
        if let Some((attr, inner, next)) = attribute(tokens, i) {
            if is_cfg_test(&attr) {
                if inner {
                    module.test_only = true;
                } else {
                    test = true;
                }
            }
            if !inner {
                if let Some(p) = path_value(&attr) {
                    path_attr = Some(p);
                }
            }
            i = next;
            continue;
        }
        let end = item_end(tokens, i);
        let item = &tokens[i..end];
        if !test {
            match mod_decl(item) {
                Some((name, line, body)) => {
                    let body = match body {
                        None => ModBody::File(path_attr.take()),
                        Some(block) => {
                            let mut inner = Module::default();
                            read_items(&block, &mut inner);
                            ModBody::Inline(inner)
                        }
                    };
                    module.mods.push(ModDecl { name, line, body });
                }
                None => scan(item, module, false),
            }
        }
        test = false;
        path_attr = None;
        i = end;
    }
}

/// `#[…]` or `#![…]` at `i`: its tokens, whether it is inner, and the index
/// after it.
fn attribute(tokens: &[TokenTree], i: usize) -> Option<(Vec<TokenTree>, bool, usize)> {
    if !is_punct(tokens.get(i)?, '#') {
        return None;
    }
    let inner = tokens.get(i + 1).is_some_and(|t| is_punct(t, '!'));
    let at = if inner { i + 2 } else { i + 1 };
    match tokens.get(at)? {
        TokenTree::Group(g) if g.delimiter() == Delimiter::Bracket => {
            Some((g.stream().into_iter().collect(), inner, at + 1))
        }
        _ => None,
    }
}

/// `cfg(test)` or `cfg(all(…, test, …))`: code that exists only in tests.
fn is_cfg_test(attr: &[TokenTree]) -> bool {
    let [TokenTree::Ident(cfg), TokenTree::Group(pred)] = attr else {
        return false;
    };
    if cfg != "cfg" {
        return false;
    }
    let pred: Vec<TokenTree> = pred.stream().into_iter().collect();
    match pred.as_slice() {
        [TokenTree::Ident(t)] => t == "test",
        [TokenTree::Ident(all), TokenTree::Group(args)] if all == "all" => {
            let args: Vec<TokenTree> = args.stream().into_iter().collect();
            args.split(|t| is_punct(t, ','))
                .any(|a| matches!(a, [TokenTree::Ident(t)] if t == "test"))
        }
        _ => false,
    }
}

/// `path = "…"`: the string.
fn path_value(attr: &[TokenTree]) -> Option<String> {
    let [TokenTree::Ident(path), eq, TokenTree::Literal(lit)] = attr else {
        return None;
    };
    if path != "path" || !is_punct(eq, '=') {
        return None;
    }
    let lit = lit.to_string();
    if let Some(raw) = lit.strip_prefix('r') {
        let hashes = raw.len() - raw.trim_start_matches('#').len();
        return Some(raw[hashes + 1..raw.len() - hashes - 1].to_string());
    }
    let quoted = lit.strip_prefix('"')?.strip_suffix('"')?;
    // Paths with escapes are too rare to unescape; keep them as written.
    Some(quoted.to_string())
}

/// The index after the item starting at `start`.
fn item_end(tokens: &[TokenTree], start: usize) -> usize {
    let words: Vec<String> = tokens[start..]
        .iter()
        .filter(|t| !matches!(t, TokenTree::Group(g) if g.delimiter() == Delimiter::Parenthesis))
        .take(4)
        .map(|t| match t {
            TokenTree::Ident(i) => i.to_string(),
            _ => String::new(),
        })
        .collect();
    // Past `pub` and `pub(…)` (the group is filtered out above).
    let words = match words.first().map(String::as_str) {
        Some("pub") => &words[1..],
        _ => &words[..],
    };
    let ends_at_semicolon = match words {
        [first, ..] if matches!(first.as_str(), "use" | "static" | "type" | "let") => true,
        [first, next, ..] if first == "const" => {
            !matches!(next.as_str(), "fn" | "unsafe" | "async" | "extern")
        }
        [first, next, ..] if first == "extern" => next == "crate",
        _ => false,
    };
    for (k, t) in tokens.iter().enumerate().skip(start) {
        match t {
            TokenTree::Punct(p) if p.as_char() == ';' => return k + 1,
            TokenTree::Group(g) if g.delimiter() == Delimiter::Brace && !ends_at_semicolon => {
                return k + 1;
            }
            _ => {}
        }
    }
    tokens.len()
}

/// `[pub[(…)]] mod NAME ;` or `… mod NAME { … }`: the name, the line and the
/// block's tokens, if inline.
fn mod_decl(item: &[TokenTree]) -> Option<(String, usize, Option<Block>)> {
    let mut k = 0;
    if matches!(item.first(), Some(TokenTree::Ident(i)) if i == "pub") {
        k += 1;
        if matches!(item.get(k), Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Parenthesis)
        {
            k += 1;
        }
    }
    let TokenTree::Ident(kw) = item.get(k)? else {
        return None;
    };
    if kw != "mod" {
        return None;
    }
    let TokenTree::Ident(name) = item.get(k + 1)? else {
        return None;
    };
    let line = kw.span().start().line;
    let name = unraw(&name.to_string());
    match item.get(k + 2)? {
        TokenTree::Punct(p) if p.as_char() == ';' => Some((name, line, None)),
        TokenTree::Group(g) if g.delimiter() == Delimiter::Brace => {
            Some((name, line, Some(g.stream().into_iter().collect())))
        }
        _ => None,
    }
}

/// Collects the `use` trees and paths in `tokens`, at any depth; `nested`
/// when `tokens` are inside another item.
fn scan(tokens: &[TokenTree], module: &mut Module, nested: bool) {
    let mut k = 0;
    while k < tokens.len() {
        match &tokens[k] {
            TokenTree::Group(g) => {
                let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                scan(&inner, module, true);
                k += 1;
            }
            TokenTree::Ident(id) if id == "use" && starts_use_tree(tokens.get(k + 1)) => {
                let end = tokens[k + 1..]
                    .iter()
                    .position(|t| is_punct(t, ';'))
                    .map_or(tokens.len(), |p| k + 1 + p);
                use_tree(&tokens[k + 1..end], &[], nested, module);
                k = end;
            }
            TokenTree::Ident(id) if !continues_path(tokens, k) && is_path_sep(tokens, k + 1) => {
                let mut segments = vec![unraw(&id.to_string())];
                let mut line = id.span().start().line;
                let mut at = k + 1;
                while is_path_sep(tokens, at) {
                    match tokens.get(at + 2) {
                        Some(TokenTree::Ident(next)) => {
                            segments.push(unraw(&next.to_string()));
                            line = next.span().start().line;
                            at += 3;
                        }
                        _ => break,
                    }
                }
                module.paths.push(PathRef {
                    path: Path { segments, line },
                });
                k = at;
            }
            _ => k += 1,
        }
    }
}

/// Whether the token after `use` starts a use tree (not `use<'a>` in
/// `impl Trait + use<'a>`).
fn starts_use_tree(next: Option<&TokenTree>) -> bool {
    match next {
        Some(TokenTree::Ident(_)) => true,
        Some(TokenTree::Punct(p)) => matches!(p.as_char(), ':' | '*' | '$'),
        Some(TokenTree::Group(g)) => g.delimiter() == Delimiter::Brace,
        _ => false,
    }
}

/// Reads one use tree (the tokens between `use` and `;`, or one part of a
/// group) below `prefix`.
fn use_tree(tokens: &[TokenTree], prefix: &[String], nested: bool, module: &mut Module) {
    let mut path = prefix.to_vec();
    let mut k = 0;
    // `$crate::…` in a macro is `crate::…`.
    if tokens.first().is_some_and(|t| is_punct(t, '$')) {
        k = 1;
    }
    if is_path_sep(tokens, k) {
        // `use ::other_crate::…`: not this crate.
        return;
    }
    loop {
        match tokens.get(k) {
            Some(TokenTree::Ident(id)) => {
                let name = unraw(&id.to_string());
                let line = id.span().start().line;
                // `a::{self}` is `a` itself; a leading `self::` stays.
                if name != "self" || path.is_empty() {
                    path.push(name);
                }
                if is_path_sep(tokens, k + 1) {
                    k += 3;
                    continue;
                }
                let binds = match (tokens.get(k + 1), tokens.get(k + 2)) {
                    (Some(TokenTree::Ident(kw)), Some(TokenTree::Ident(alias))) if kw == "as" => {
                        match unraw(&alias.to_string()) {
                            a if a == "_" => Binding::Hidden,
                            a => Binding::Name(a),
                        }
                    }
                    _ => Binding::Name(path.last().cloned().unwrap_or_default()),
                };
                module.uses.push(Use {
                    path: Path {
                        segments: path,
                        line,
                    },
                    binds,
                    nested,
                });
                return;
            }
            Some(TokenTree::Punct(p)) if p.as_char() == '*' => {
                if !path.is_empty() {
                    let line = p.span().start().line;
                    module.uses.push(Use {
                        path: Path {
                            segments: path,
                            line,
                        },
                        binds: Binding::Glob,
                        nested,
                    });
                }
                return;
            }
            Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                for part in inner.split(|t| is_punct(t, ',')) {
                    use_tree(part, &path, nested, module);
                }
                return;
            }
            _ => return,
        }
    }
}

/// Whether the ident at `k` continues a path (`a::b`, where it is `b`) or
/// follows a `.` (`x.f::<T>()`): not the start of a path.
fn continues_path(tokens: &[TokenTree], k: usize) -> bool {
    (k >= 2 && is_path_sep(tokens, k - 2)) || (k >= 1 && is_punct(&tokens[k - 1], '.'))
}

/// `::` at `k`: two `:` with nothing between them.
fn is_path_sep(tokens: &[TokenTree], k: usize) -> bool {
    matches!(
        (tokens.get(k), tokens.get(k + 1)),
        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
            if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':'
    )
}

fn is_punct(t: &TokenTree, c: char) -> bool {
    matches!(t, TokenTree::Punct(p) if p.as_char() == c)
}

fn unraw(name: &str) -> String {
    name.strip_prefix("r#").unwrap_or(name).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};

    /// Prints what [`parse`] reads: one line per declaration, use and path.
    fn check(text: &str, expect: Expect) {
        let mut out = String::new();
        match parse(text) {
            Ok(module) => print(&module, 0, &mut out),
            Err(e) => out = format!("lex error at line {}\n", e.line),
        }
        expect.assert_eq(&out);
    }

    fn print(module: &Module, depth: usize, out: &mut String) {
        let pad = "  ".repeat(depth);
        if module.test_only {
            out.push_str(&format!("{pad}test only\n"));
        }
        for u in &module.uses {
            let binds = match &u.binds {
                Binding::Name(n) => format!("as {n}"),
                Binding::Glob => "glob".to_string(),
                Binding::Hidden => "as _".to_string(),
            };
            let nested = if u.nested { " (nested)" } else { "" };
            out.push_str(&format!(
                "{pad}{}: use {} {binds}{nested}\n",
                u.path.line, u.path
            ));
        }
        for p in &module.paths {
            out.push_str(&format!("{pad}{}: path {}\n", p.path.line, p.path));
        }
        for m in &module.mods {
            match &m.body {
                ModBody::File(None) => out.push_str(&format!("{pad}{}: mod {};\n", m.line, m.name)),
                ModBody::File(Some(p)) => {
                    out.push_str(&format!("{pad}{}: mod {} at {p};\n", m.line, m.name))
                }
                ModBody::Inline(inner) => {
                    out.push_str(&format!("{pad}{}: mod {} {{\n", m.line, m.name));
                    print(inner, depth + 1, out);
                    out.push_str(&format!("{pad}}}\n"));
                }
            }
        }
    }

    #[test]
    fn grouped_and_multi_line_uses() {
        check(
            r#"
use crate::{a, b::c};
use crate::exec::{
    self,
    target::{Ack as TargetAck, Plan},
    migrate::*,
};
pub use super::x::Y as _;
pub(crate) use self::inner::Z;
use std::io;
use ::other::Thing;
"#,
            expect![[r#"
                2: use crate::a as a
                2: use crate::b::c as c
                4: use crate::exec as exec
                5: use crate::exec::target::Ack as TargetAck
                5: use crate::exec::target::Plan as Plan
                6: use crate::exec::migrate glob
                8: use super::x::Y as _
                9: use self::inner::Z as Z
                10: use std::io as io
            "#]],
        );
    }

    #[test]
    fn paths_in_code() {
        check(
            r#"
fn run(x: crate::exec::Frame) -> super::job::Holder {
    let h = crate::job::holder::Holder::<u8>::new();
    let v: Vec<u8> = x.collect::<Vec<_>>();
    <crate::a::T as super::b::Tr>::f();
    use crate::inner::thing;
    ::std::process::exit(0);
    $crate::mac::m!();
}
"#,
            expect![[r#"
                6: use crate::inner::thing as thing (nested)
                2: path crate::exec::Frame
                2: path super::job::Holder
                3: path crate::job::holder::Holder
                5: path crate::a::T
                5: path super::b::Tr
                8: path crate::mac::m
            "#]],
        );
    }

    #[test]
    fn comments_and_strings_are_not_paths() {
        check(
            r####"
// use crate::comment::line;
/* use crate::comment::block; /* nested crate::x::y */ still comment crate::a::b */
//! crate::inner::doc
/// crate::outer::doc
const A: &str = "use crate::string::plain; crate::s::t";
const B: &str = r#"crate::raw::string"# ;
const C: &[u8] = br##"crate::raw::bytes "# "##;
const D: char = '"';
fn f<'a>(x: &'a str) -> &'a str { let _ = "crate::after::lifetime"; x }
use crate::real::one;
"####,
            expect![[r#"
                11: use crate::real::one as one
            "#]],
        );
    }

    #[test]
    fn test_code_is_skipped() {
        check(
            r#"
use crate::kept::a;
#[cfg(test)]
mod tests {
    use crate::tested::b;
}
#[cfg(test)]
mod tests_file;
#[cfg(all(test, feature = "x"))]
use crate::tested::c;
#[cfg(test)]
fn helper() -> crate::tested::D { todo!() }
#[cfg(not(test))]
use crate::kept::e;
#[cfg(test)]
const X: u8 = { 1 };
use crate::kept::f;
"#,
            expect![[r#"
                2: use crate::kept::a as a
                14: use crate::kept::e as e
                17: use crate::kept::f as f
            "#]],
        );
        check(
            "#![cfg(test)]\nuse crate::x::y;\n",
            expect![[r#"
            test only
            2: use crate::x::y as y
        "#]],
        );
    }

    #[test]
    fn module_declarations() {
        check(
            r#"
#![allow(dead_code)]
pub mod a;
pub(crate) mod b {
    use super::a::X;
    pub mod c;
    mod d { fn f() -> crate::e::T { todo!() } }
}
#[path = "other.rs"]
mod r#type;
fn not_a_module() { let m = 1; }
"#,
            expect![[r#"
                3: mod a;
                4: mod b {
                  5: use super::a::X as X
                  6: mod c;
                  7: mod d {
                    7: path crate::e::T
                  }
                }
                10: mod type at other.rs;
            "#]],
        );
    }

    #[test]
    fn items_ending_in_blocks_and_semicolons() {
        // The item after `const X: S = S { … };` and after a fn's block must
        // still be seen as a module declaration.
        check(
            r#"
const X: S = S { a: crate::one::A };
mod after_const;
impl<A, B> T for S<A, B> where A: Copy { fn f() {} }
mod after_impl;
macro_rules! m { () => { $crate::two::B } }
mod after_macro;
"#,
            expect![[r#"
                2: path crate::one::A
                6: path crate::two::B
                3: mod after_const;
                5: mod after_impl;
                7: mod after_macro;
            "#]],
        );
    }

    #[test]
    fn shebang_and_bad_text() {
        check(
            "#!/usr/bin/env run\nuse crate::a::b;\n",
            expect![[r#"
            2: use crate::a::b as b
        "#]],
        );
        check(
            "fn f() {\n\n",
            expect![[r#"
                lex error at line 1
            "#]],
        );
    }
}
