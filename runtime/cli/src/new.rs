//! `eventplug new DIR [--example NAME]`: a new AssemblyScript plugin project from one of the bundled
//! examples, with the SDK version this eventplug speaks, ready for `npm test`.

use anyhow::{Context, bail};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod templates {
    include!(concat!(env!("OUT_DIR"), "/templates.rs"));
}

/// The dependency line every bundled example uses, rewritten to the project's own SDK copy.
const EXAMPLE_SDK_DEPENDENCY: &str = r#""eventplug-sdk": "file:../../sdk/assemblyscript""#;
/// The oldest Node.js and npm the SDK's tools (AssemblyScript 0.28) work with.
const MIN_NODE: u32 = 18;
const MIN_NPM: u32 = 8;

/// Arguments of `eventplug new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The folder to create (must not exist, or be empty).
    dir: PathBuf,
    /// The example to start from.
    #[arg(long, default_value = "trace")]
    example: String,
    /// Write the files only; do not run `npm install`.
    #[arg(long)]
    no_install: bool,
}

/// The SDK's version, from its package.json.
fn sdk_version() -> anyhow::Result<String> {
    let (_, bytes) = templates::SDK_FILES
        .iter()
        .find(|(path, _)| *path == "package.json")
        .context("the bundled SDK has no package.json")?;
    let package: serde_json::Value = serde_json::from_slice(bytes)?;
    package["version"]
        .as_str()
        .map(str::to_string)
        .context("the bundled SDK's package.json has no version")
}

/// The examples bundled with this eventplug.
pub fn example_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = templates::EXAMPLE_FILES
        .iter()
        .map(|(name, _, _)| *name)
        .collect();
    names.dedup();
    names
}

/// The major version a `--version` command prints (`v20.1.0` → 20), or why there is none.
fn major_version(tool: &str) -> Result<u32, String> {
    let output = Command::new(tool)
        .arg("--version")
        .output()
        .map_err(|e| format!("`{tool}` is not installed or not on PATH ({e}); install Node.js {MIN_NODE} or newer with npm"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .ok_or_else(|| format!("`{tool} --version` printed {text:?}, not a version"))
}

fn check_tools() -> anyhow::Result<()> {
    for (tool, minimum) in [("node", MIN_NODE), ("npm", MIN_NPM)] {
        let major = major_version(tool).map_err(anyhow::Error::msg)?;
        if major < minimum {
            bail!(
                "{tool} {major} is too old: the plugin toolchain needs {tool} {minimum} or newer"
            );
        }
    }
    Ok(())
}

fn write(dir: &Path, relative: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let path = dir.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Runs the command.
pub fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let names = example_names();
    if !names.contains(&args.example.as_str()) {
        bail!(
            "no example {:?}; the examples are: {}",
            args.example,
            names.join(", ")
        );
    }
    if let Ok(mut entries) = std::fs::read_dir(&args.dir)
        && entries.next().is_some()
    {
        bail!("{} is not empty: give a new folder", args.dir.display());
    }
    if !args.no_install {
        check_tools()?;
    }
    let version = sdk_version()?;
    let sdk_dir = format!(".eventplug/eventplug-sdk-{version}");
    for (path, bytes) in templates::SDK_FILES {
        write(&args.dir, &format!("{sdk_dir}/{path}"), bytes)?;
    }
    for (_, path, bytes) in templates::EXAMPLE_FILES
        .iter()
        .filter(|(name, _, _)| *name == args.example)
    {
        if *path == "package.json" {
            let text =
                std::str::from_utf8(bytes).context("the example's package.json is not UTF-8")?;
            if !text.contains(EXAMPLE_SDK_DEPENDENCY) {
                bail!(
                    "the bundled example {} does not depend on the SDK as expected",
                    args.example
                );
            }
            let project = args
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "plugin".into());
            let text = text
                .replace(
                    EXAMPLE_SDK_DEPENDENCY,
                    &format!(r#""eventplug-sdk": "file:{sdk_dir}""#),
                )
                .replacen(
                    &format!(r#""name": "eventplug-example-{}""#, args.example),
                    &format!(r#""name": {}"#, serde_json::Value::from(project)),
                    1,
                );
            write(&args.dir, path, text.as_bytes())?;
        } else {
            write(&args.dir, path, bytes)?;
        }
    }
    write(&args.dir, ".gitignore", b"node_modules/\nbuild/\n")?;
    writeln!(
        out,
        "created {} from the {} example (SDK {version})",
        args.dir.display(),
        args.example
    )?;
    if args.no_install {
        writeln!(
            out,
            "next: cd {} && npm install && npm test",
            args.dir.display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund"])
        .current_dir(&args.dir)
        .status()
        .context("cannot run npm install")?;
    if !status.success() {
        bail!(
            "npm install failed in {} (see its output above)",
            args.dir.display()
        );
    }
    writeln!(out, "next: cd {} && npm test", args.dir.display())?;
    Ok(ExitCode::SUCCESS)
}
