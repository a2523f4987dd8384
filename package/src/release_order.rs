//! Which of two package versions is newer: the downgrade check that `trident deploy push` makes
//! on the host and the unit's verifier makes for the Mender Update Module
//! (`trident-edge verify --not-older-than`), with one wording.

/// Refuses `version` older than `running` (semantic versions; a leading `v` is ignored), or
/// either not being one, since then nothing says which is newer. The message names both.
pub fn check_not_older(version: &str, running: &str) -> Result<(), String> {
    let parse = |v: &str| semver::Version::parse(v.trim_start_matches('v'));
    match (parse(version), parse(running)) {
        (Ok(new), Ok(cur)) if new < cur => Err(format!(
            "{version} is older than the running {running} (a downgrade)"
        )),
        (Ok(_), Ok(_)) => Ok(()),
        _ => Err(format!(
            "cannot tell whether {version} is newer than the running {running} (not semantic versions)"
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn downgrades_and_unorderable_versions_are_refused() {
        assert!(super::check_not_older("1.2.0", "1.1.9").is_ok());
        assert!(
            super::check_not_older("1.2.0", "1.2.0").is_ok(),
            "a reinstall"
        );
        assert!(super::check_not_older("v1.10.0", "1.9.0").is_ok());
        let e = super::check_not_older("1.2.0-rc.1", "1.2.0").unwrap_err();
        assert!(
            e.contains("older than the running 1.2.0 (a downgrade)"),
            "{e}"
        );
        let e = super::check_not_older("nightly", "1.2.0").unwrap_err();
        assert!(e.contains("not semantic versions"), "{e}");
    }
}
