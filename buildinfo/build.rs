//! Sets `TANDEM_COMMIT` for the crate: `$TANDEM_BUILD_COMMIT` when set (a build from a source
//! tarball), else `git rev-parse --short=12 HEAD` of the checkout, else `unknown`. It runs again
//! when HEAD or the branch it names moves (a commit, a checkout), not on every build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn watch(p: &Path) {
    // A path that does not exist would make cargo run this script on every build.
    if p.exists() {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}

fn main() {
    println!("cargo:rerun-if-env-changed=TANDEM_BUILD_COMMIT");
    let commit = match std::env::var("TANDEM_BUILD_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => {
            if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
                let dir = PathBuf::from(dir);
                watch(&dir.join("HEAD"));
                let common = git(&["rev-parse", "--git-common-dir"])
                    .map(PathBuf::from)
                    .map(|c| if c.is_absolute() { c } else { dir.join(c) })
                    .unwrap_or_else(|| dir.clone());
                if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
                    watch(&common.join(&r));
                }
                watch(&common.join("packed-refs"));
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    println!("cargo:rustc-env=TANDEM_COMMIT={commit}");
}
