//! Running cargo from the workspace root.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

/// The workspace root: the parent of this crate's directory.
pub(crate) fn root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or(manifest_dir.clone(), PathBuf::from)
}

fn cargo_command(args: &[&str]) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(args).current_dir(root());
    command
}

/// Runs cargo with `args` (and extra environment), its output going to the terminal.
pub(crate) fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    let mut command = cargo_command(args);
    command.envs(env.iter().copied());
    let status = command
        .status()
        .map_err(|err| format!("cannot run cargo {}: {err}", args.join(" ")))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo {} failed ({status})", args.join(" ")))
    }
}

/// Runs cargo with `args` and returns what it printed on stdout.
pub(crate) fn cargo_output(args: &[&str]) -> Result<String, String> {
    let output = cargo_command(args)
        .stderr(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run cargo {}: {err}", args.join(" ")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "cargo {} failed ({})",
            args.join(" "),
            output.status
        ))
    }
}

/// The number after `--seconds` in `args`, or `default` without one.
pub(crate) fn seconds_arg(args: &[String], default: u64) -> Result<u64, String> {
    match args.iter().position(|arg| arg == "--seconds") {
        Some(i) => args
            .get(i + 1)
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| "--seconds takes a positive number".to_owned()),
        None => Ok(default),
    }
}

/// Runs one named step, announcing it first.
pub(crate) fn step(name: &str, body: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    println!("== {name}");
    body().map_err(|err| format!("{name}: {err}"))
}
