//! The README's code cannot drift: every `rust` and `toml` block in it is a verbatim copy
//! of code that is compiled, either the Quick start project (`examples/quickstart`, built
//! and run in CI) or a doctest in `src/` (run by `cargo test`).

use std::path::{Path, PathBuf};

/// The fenced code blocks of `text` with their info string.
fn blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else { continue };
        let body: Vec<&str> = lines.by_ref().take_while(|line| !line.starts_with("```")).collect();
        out.push((info.trim().to_owned(), body.join("\n")));
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// What a source file compiles: its code as it is, and its doc comments' code (the `//! `
/// or `/// ` prefix removed, rustdoc's hidden `# ` lines dropped).
fn compiled_texts(root: &Path) -> Vec<(PathBuf, String)> {
    let mut files = vec![
        root.join("examples/quickstart/Cargo.toml"),
        root.join("examples/quickstart/build.rs"),
        root.join("examples/quickstart/src/main.rs"),
    ];
    rust_files(&root.join("src"), &mut files);
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<&str> = text
            .lines()
            .filter_map(|line| {
                let line = line.trim_start();
                line.strip_prefix("//! ")
                    .or_else(|| line.strip_prefix("/// "))
                    .or_else(|| (line == "//!" || line == "///").then_some(""))
            })
            .filter(|line| !line.starts_with("# ") && *line != "#")
            .collect();
        out.push((path.clone(), docs.join("\n")));
        out.push((path, text));
    }
    out
}

#[test]
fn every_rust_and_toml_block_of_the_readme_is_compiled_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let compiled = compiled_texts(root);
    let mut checked = 0;
    for (info, body) in blocks(&readme) {
        let language = info.split(',').next().unwrap_or_default();
        if language != "rust" && language != "toml" {
            continue;
        }
        let found = compiled.iter().find(|(_, text)| text.contains(&body));
        assert!(found.is_some(), "this README block is not a copy of compiled code:\n```{info}\n{body}\n```");
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} blocks checked");
}
