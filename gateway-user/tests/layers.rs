//! The daemon's imports run one way: each top-level module of `gateway-user/src` may use
//! only the modules below it in [`LAYERS`] (control, then data, then kernel, then the
//! leaves every wing reads). This test reads every source file with `syn` and fails on an
//! import that points up or sideways, or on a module missing from the table, so the rule
//! holds by test rather than by habit. `docs/architecture.md` explains the order.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use syn::visit::Visit;

/// Top-level modules, highest first. A module may import those after it, never those
/// before it; modules on one line may not import each other.
const LAYERS: &[&[&str]] = &[
    // Not part of the daemon: the fuzz targets' entry points (the `fuzzing` feature), which
    // re-export parsers from every wing.
    &["fuzzing"],
    // Control path: the process, its admin API, reloads, what is served, probes.
    &["runtime"],
    &["admin"],
    &["reload"],
    &["generation"],
    &["probing"],
    &["cli", "privileges"],
    // Data path: inbound HTTP and upgrades, the state it is lent, routing, outbound.
    &["proxy"],
    &["shared"],
    &["snapshot"],
    &["route"],
    &["upstream"],
    // A tunnel's life (limits, registry, relay), and what it reads of a backend.
    &["tunnel"],
    &["health"],
    &["tls"],
    &["body"],
    // Connection limits, the upgrade rate, accept loops that survive running out of
    // descriptors.
    &["admission"],
    // Kernel path: the eBPF program, maps, splice, epoll watch, self-test.
    &["dataplane"],
    // Leaves every wing reads.
    &["metrics"],
    // Unit-test helpers (`cfg(test)`), for any wing's tests.
    &["test_support"],
    // The configuration, a crate of its own re-exported as `crate::config`: the compiler
    // keeps it from importing the daemon.
    &["config"],
];

/// Entries of [`LAYERS`] that are re-exported crates rather than modules of `src/`.
const CRATES: &[&str] = &["config"];

/// Imports against the order, each with why. Keep this short; prefer moving the code.
const EXCEPTIONS: &[(&str, &str, &str)] = &[];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|line| line.contains(&module))
}

/// Every `crate::x` (or `super::…::x` that climbs to the crate root) in one file: `x`.
struct Imports {
    /// How many `super`s reach the crate root from this file.
    depth: usize,
    found: BTreeSet<String>,
}

impl Imports {
    fn path<'a>(&mut self, segments: impl IntoIterator<Item = &'a syn::Ident>) {
        let names: Vec<String> = segments.into_iter().map(ToString::to_string).collect();
        self.names(&names);
    }

    fn names(&mut self, names: &[String]) {
        let supers = names.iter().take_while(|n| *n == "super").count();
        if names.first().is_some_and(|n| n == "crate") {
            if let Some(next) = names.get(1) {
                self.found.insert(next.clone());
            }
        } else if supers > 0 && supers >= self.depth {
            if let Some(next) = names.get(supers) {
                self.found.insert(next.clone());
            }
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(prefix, &path.tree);
                prefix.pop();
            }
            syn::UseTree::Name(name) => {
                prefix.push(name.ident.to_string());
                self.names(prefix);
                prefix.pop();
            }
            syn::UseTree::Rename(rename) => {
                prefix.push(rename.ident.to_string());
                self.names(prefix);
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.names(prefix),
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }

    /// `crate :: x` inside a macro's tokens (`tracing::info!(… crate::x …)`), which syn
    /// leaves unparsed.
    fn tokens(&mut self, tokens: proc_macro2::TokenStream) {
        let trees: Vec<proc_macro2::TokenTree> = tokens.into_iter().collect();
        for (i, tree) in trees.iter().enumerate() {
            match tree {
                proc_macro2::TokenTree::Group(group) => self.tokens(group.stream()),
                proc_macro2::TokenTree::Ident(ident) if ident == "crate" => {
                    if let [proc_macro2::TokenTree::Punct(a), proc_macro2::TokenTree::Punct(b), proc_macro2::TokenTree::Ident(next), ..] =
                        &trees[i + 1..]
                    {
                        if a.as_char() == ':' && b.as_char() == ':' {
                            self.found.insert(next.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<syn::Path>()
                .is_ok_and(|path| path.is_ident("test"))
    })
}

impl<'ast> Visit<'ast> for Imports {
    fn visit_item_mod(&mut self, module: &'ast syn::ItemMod) {
        // Unit tests may reach anywhere.
        if !is_cfg_test(&module.attrs) {
            syn::visit::visit_item_mod(self, module);
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        if !is_cfg_test(&item.attrs) {
            self.use_tree(&mut Vec::new(), &item.tree);
        }
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        if !is_cfg_test(&item.attrs) {
            syn::visit::visit_item_fn(self, item);
        }
    }

    fn visit_item_impl(&mut self, item: &'ast syn::ItemImpl) {
        if !is_cfg_test(&item.attrs) {
            syn::visit::visit_item_impl(self, item);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.path(path.segments.iter().map(|s| &s.ident));
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.tokens(mac.tokens.clone());
        syn::visit::visit_macro(self, mac);
    }
}

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read src")
        .map(|entry| entry.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            // `#[cfg(test)] mod tests;` directories: unit tests may reach anywhere.
            if name != "tests" {
                sources(&path, found);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" {
            found.push(path);
        }
    }
}

#[test]
fn imports_run_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let parts: Vec<&str> = relative.iter().filter_map(|p| p.to_str()).collect();
        // `lib.rs` only declares and re-exports; `main.rs` is the binary, which uses the
        // library from outside.
        if parts == ["lib.rs"] || parts == ["main.rs"] {
            continue;
        }
        let module = parts[0].trim_end_matches(".rs");
        seen.insert(module.to_owned());
        let Some(from) = rank(module) else {
            problems.push(format!(
                "{}: module `{module}` is not in LAYERS: add it where it belongs",
                relative.display()
            ));
            continue;
        };
        // `a.rs` and `a/mod.rs` are one `super` below the root; `a/b.rs` two.
        let depth = match parts.last() {
            Some(&"mod.rs") => parts.len() - 1,
            _ => parts.len(),
        };
        let text = fs::read_to_string(file).expect("read source");
        let parsed = syn::parse_file(&text)
            .unwrap_or_else(|e| panic!("{}: does not parse: {e}", relative.display()));
        let mut imports = Imports {
            depth,
            found: BTreeSet::new(),
        };
        imports.visit_file(&parsed);
        for to in &imports.found {
            if to == module {
                continue;
            }
            if EXCEPTIONS.iter().any(|(f, t, _)| *f == module && t == to) {
                continue;
            }
            match rank(to) {
                Some(rank) if rank > from => {}
                Some(_) => problems.push(format!(
                    "{}: `{module}` imports `{to}`, which is not below it in LAYERS",
                    relative.display()
                )),
                None => problems.push(format!(
                    "{}: `{module}` imports `crate::{to}`: a root re-export or an unknown \
                     module; import it from the module that defines it",
                    relative.display()
                )),
            }
        }
    }
    for module in LAYERS.iter().flat_map(|line| line.iter()) {
        assert!(
            seen.contains(*module) || CRATES.contains(module),
            "LAYERS names `{module}`, which is not a module of src/ any more"
        );
    }
    assert!(
        problems.is_empty(),
        "imports against the layer order:\n{}",
        problems.join("\n")
    );
}

/// The checker itself: an upward import in a file is found, in a `use`, a path and a macro.
#[test]
fn the_checker_sees_every_kind_of_import() {
    let file = syn::parse_file(
        "use crate::{a::X, b};
         use super::super::c::Y;
         fn f() { crate::d::g(); tracing::info!(x = %crate::e::h()); }
         #[cfg(test)]
         mod tests { use crate::t; }",
    )
    .expect("parses");
    let mut imports = Imports {
        depth: 2,
        found: BTreeSet::new(),
    };
    imports.visit_file(&file);
    let found: Vec<&str> = imports.found.iter().map(String::as_str).collect();
    assert_eq!(found, ["a", "b", "c", "d", "e"]);
}
