//! Build step of the `eventplug` command: embeds the AssemblyScript SDK package and the
//! AssemblyScript examples, which `eventplug new` writes into a new plugin project.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    embed_templates()?;
    Ok(())
}

/// Files below `dir` (relative paths, sorted), skipping dependencies, build output and lock files.
fn files(dir: &Path, only: Option<&[&str]>) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
            if matches!(
                name.as_str(),
                "node_modules" | "build" | "package-lock.json"
            ) {
                continue;
            }
            if let Some(only) = only {
                let top = relative
                    .components()
                    .next()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .unwrap_or_default();
                if !only.contains(&top.as_str()) {
                    continue;
                }
            }
            if path.is_dir() {
                println!("cargo:rerun-if-changed={}", path.display());
                stack.push(path);
            } else {
                found.push(relative);
            }
        }
    }
    found.sort();
    found
}

fn embed_templates() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let examples = manifest.join("../../examples");
    let sdk = manifest.join("../../sdk/assemblyscript");
    println!("cargo:rerun-if-changed={}", examples.display());
    println!("cargo:rerun-if-changed={}", sdk.display());
    let mut code = String::from(
        "/// AssemblyScript examples: (example, relative path, bytes).\npub const EXAMPLE_FILES: &[(&str, &str, &[u8])] = &[\n",
    );
    let mut names: Vec<String> = std::fs::read_dir(&examples)?
        .flatten()
        .filter(|e| e.path().join("package.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in &names {
        let dir = examples.join(name);
        println!("cargo:rerun-if-changed={}", dir.display());
        for file in files(&dir, None) {
            let full = dir.join(&file);
            println!("cargo:rerun-if-changed={}", full.display());
            writeln!(
                code,
                "    ({name:?}, {:?}, include_bytes!({:?})),",
                file.to_string_lossy(),
                full.display().to_string()
            )?;
        }
    }
    code.push_str("];\n\n/// The SDK package (its published files): (relative path, bytes).\npub const SDK_FILES: &[(&str, &[u8])] = &[\n");
    for file in files(
        &sdk,
        Some(&["package.json", "assembly", "transform.mjs", "README.md"]),
    ) {
        let full = sdk.join(&file);
        println!("cargo:rerun-if-changed={}", full.display());
        writeln!(
            code,
            "    ({:?}, include_bytes!({:?})),",
            file.to_string_lossy(),
            full.display().to_string()
        )?;
    }
    code.push_str("];\n");
    std::fs::write(
        PathBuf::from(std::env::var("OUT_DIR")?).join("templates.rs"),
        code,
    )?;
    Ok(())
}
