//! Where things are: the repository, its models, the built binaries, scratch directories.

use serde_json::Value;
use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The repository's `models/`.
pub fn models_dir() -> PathBuf {
    repo().join("models")
}

/// A built binary of the workspace (`make test` builds them before running tests).
pub fn binary(name: &str) -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from);
    let path = target.join("debug").join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build --workspace --bins` (make test does)",
        path.display()
    );
    path
}

/// A JSON file, read and parsed; panics naming the file.
pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Set to `1` to keep every scratch folder after its test (by default only a failed test's
/// stays, for its logs).
pub const KEEP_SCRATCH_ENV: &str = "TANDEM_KEEP_SCRATCH";

/// An empty directory under the system's temporary directory, named after `name` and this
/// process (emptied first if a previous run left it); removed when the returned guard is
/// dropped, unless the test is panicking or [`KEEP_SCRATCH_ENV`] is `1` (then its path is
/// printed).
pub fn scratch(name: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("tandem-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    Scratch(d)
}

/// A scratch directory ([`scratch`]); dereferences to its path.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The directory, kept after the guard (for a folder shared by the tests of a binary, held
    /// in a static).
    pub fn keep(self) -> PathBuf {
        let me = std::mem::ManuallyDrop::new(self);
        me.0.clone()
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for Scratch {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let keep = std::env::var(KEEP_SCRATCH_ENV).is_ok_and(|v| v == "1");
        if keep || std::thread::panicking() {
            eprintln!("scratch folder kept: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_folder_goes_with_its_guard_unless_the_test_panics() {
        let s = scratch("guard-drop");
        std::fs::write(s.join("f"), b"x").expect("write");
        let path = s.to_path_buf();
        drop(s);
        assert!(!path.exists(), "{} removed", path.display());

        let kept = std::thread::spawn(|| {
            let s = scratch("guard-panic");
            let path = s.to_path_buf();
            std::panic::panic_any(path);
        })
        .join()
        .expect_err("the thread panicked");
        let path = kept.downcast::<PathBuf>().expect("the path");
        assert!(path.is_dir(), "{} kept after a panic", path.display());
        std::fs::remove_dir_all(&*path).expect("clean up");
    }
}
