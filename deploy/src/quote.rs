//! Remote commands without shell injection. Every value that reaches a remote shell is first
//! validated against a narrow alphabet (names, versions, absolute paths), then single-quoted; the
//! scripts themselves are constants of this crate and receive values only as positional
//! parameters.

/// `[A-Za-z0-9._+-]{1,64}`, not starting with `.` or `-`: unit names, versions, tags, users.
pub fn is_plain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
}

/// An absolute path of plain components joined by `/` (no `..`, no `.`, no empty parts except
/// the root itself). Components may be hidden (`.local`): the path starts with `/`, so none
/// can read as an option.
pub fn is_safe_path(s: &str) -> bool {
    s == "/"
        || (s.starts_with('/')
            && s.len() <= 512
            && s[1..].trim_end_matches('/').split('/').all(|part| {
                part != ".." && part != "." && is_plain(part.strip_prefix('.').unwrap_or(part))
            }))
}

/// A host name or IP address: letters, digits, `.`, `-`, `:` (IPv6), `_`, `%` (zone).
pub fn is_host(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_' | b'%'))
}

/// POSIX single quoting: the value is one word whatever it holds.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The words, each quoted, joined by spaces.
pub fn quote_all<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_paths_and_hosts_accept_only_their_alphabet() {
        for ok in ["reef-01", "1.2.3", "1.2.3-rc.1+b5", "a_b"] {
            assert!(is_plain(ok), "{ok}");
        }
        for bad in [
            "",
            ".x",
            "-rf",
            "a b",
            "a;b",
            "a/b",
            "$(id)",
            "`id`",
            &"x".repeat(65),
        ] {
            assert!(!is_plain(bad), "{bad}");
        }
        for ok in [
            "/",
            "/opt/trident",
            "/media/sd/",
            "/a/b.c",
            "/home/u/.local/x",
        ] {
            assert!(is_safe_path(ok), "{ok}");
        }
        for bad in [
            "", "opt", "/a/../b", "/a/./b", "/a//b", "/a b", "/a;rm", "/$(x)", "/a/..b/.",
        ] {
            assert!(!is_safe_path(bad), "{bad}");
        }
        for ok in ["10.0.0.1", "reef-01.local", "::1", "fe80::1%eth0"] {
            assert!(is_host(ok), "{ok}");
        }
        for bad in ["", "-oProxyCommand=x", "a b", "a;b", "a@b"] {
            assert!(!is_host(bad), "{bad}");
        }
    }

    #[test]
    fn quoting_keeps_any_value_one_word() {
        let hostile = "it's; rm -rf / $(id) `id`";
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", quote(hostile)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), hostile);
        assert_eq!(quote_all(&["a", "b c"]), "'a' 'b c'");
    }
}
