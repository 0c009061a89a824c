//! The artifacts of `packaging/build.sh` in `target/dist/`, for the tests of what the nodes
//! install. A plain `cargo test` on a machine without them prints that it skips; with
//! `VZACCT_DIST_REQUIRED=1` (set by `tests/run-all.sh` right after it ran build.sh) a
//! missing artifact fails the test.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The package version, as build.sh names the packages.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `target/dist/<name>`, or None (after saying so) when it is absent and not required.
pub fn artifact(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/dist")
        .join(name);
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("VZACCT_DIST_REQUIRED").is_none_or(|v| v != "1"),
        "{} is missing: `bash packaging/build.sh` did not build it",
        path.display()
    );
    eprintln!(
        "skipped: {} is absent (run `bash packaging/build.sh`; tests/run-all.sh does)",
        path.display()
    );
    None
}

/// Run a program; it must succeed. Returns stdout.
pub fn run(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}
