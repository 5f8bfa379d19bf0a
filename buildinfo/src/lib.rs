//! What a daemon was built from, for `tandem_build_info{version, commit}` on `/metrics`.

/// The workspace version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit (12 hex digits) the build came from: `$TANDEM_BUILD_COMMIT` at build time
/// when set, else the checkout's HEAD, else `unknown` (not built from a git checkout).
pub const COMMIT: &str = env!("TANDEM_COMMIT");

#[cfg(test)]
mod tests {
    #[test]
    fn commit_is_hex_or_unknown() {
        let c = super::COMMIT;
        assert!(
            c == "unknown"
                || std::env::var("TANDEM_BUILD_COMMIT").is_ok()
                || (c.len() == 12 && c.bytes().all(|b| b.is_ascii_hexdigit())),
            "{c}"
        );
    }
}
