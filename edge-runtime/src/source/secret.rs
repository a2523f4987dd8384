//! Credentials in source URIs (`rtsp://user:pass@cam/stream`, `?token=…`, rtspsrc's `user-pw=`)
//! must reach GStreamer and nothing else: not `/metrics` labels, the detections log, snapshot
//! names, logs, `/healthz`, the run summary or error messages, all of which end up in journald,
//! Prometheus and bug reports.
//!
//! [`SecretText`] holds such text. Its `Display` and `Debug` are the redacted form, so every
//! `format!`, `to_string()` and `{:?}` is safe by default; the real text comes out only through
//! [`SecretText::expose_secret`], which only the pipeline builder calls. [`redact`] masks text
//! that did not come through the type (a URI that failed to parse, GStreamer's own messages).

use std::borrow::Cow;
use std::fmt;

/// What replaces a credential.
pub const MASK: &str = "***";

/// Text that may carry credentials (a camera URL, a launch line), shown redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText {
    text: String,
    /// Computed once: the run loop shows its source on every frame.
    shown: String,
}

impl SecretText {
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        let shown = redact(&text).into_owned();
        SecretText { text, shown }
    }

    /// The text with its credentials, for GStreamer only. Anything displayed, logged or written
    /// uses `Display` instead.
    pub fn expose_secret(&self) -> &str {
        &self.text
    }

    /// The redacted form (what `Display` writes).
    pub fn redacted(&self) -> &str {
        &self.shown
    }
}

impl fmt::Display for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SecretText").field(&self.shown).finish()
    }
}

/// `text` with every URI's user information (`user:pass@`, `user@`) and every secret-looking
/// `key=value` (query parameters, launch-line properties; see [`is_secret_key`]) replaced by
/// [`MASK`]. Scheme, host, port, path and the other parameters stay, so an operator can still
/// tell which camera is meant. Idempotent. Text without credentials is returned unchanged.
pub fn redact(text: &str) -> Cow<'_, str> {
    match mask_userinfo(text) {
        Cow::Borrowed(_) => mask_secret_values(text),
        Cow::Owned(masked) => Cow::Owned(mask_secret_values(&masked).into_owned()),
    }
}

/// Where a URI (or a quoted or bare launch-line value) ends.
fn ends_token(c: char) -> bool {
    c.is_whitespace() || c == '"' || c == '\''
}

/// `scheme://USERINFO@host…` → `scheme://***@host…`. The user information runs to the *last*
/// `@` of the URI rather than stopping at the first `/`, `?` or `#` as RFC 3986 would: operators
/// type passwords with those characters unencoded, and hiding a host with an `@` in its path is
/// the better mistake than showing half a password.
fn mask_userinfo(text: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let start = from + found + 3;
        let end = text[start..]
            .find(ends_token)
            .map_or(text.len(), |e| start + e);
        if let Some(at) = text[start..end].rfind('@') {
            out.push_str(&text[copied..start]);
            out.push_str(MASK);
            copied = start + at;
        }
        from = end;
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// Keys whose values are credentials, compared without case: passwords and tokens in query
/// strings (`password=`, `passwd=`, `token=`, `access_token=`, `api_key=`, …), GStreamer's
/// credential properties (rtspsrc and souphttpsrc `user-id`/`user-pw`, `proxy-id`/`proxy-pw`),
/// and user names, hidden as the user of `user:pass@` is.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    const EXACT: [&str; 11] = [
        "pass", "pw", "pwd", "user", "usr", "username", "user-id", "user_id", "proxy-id", "auth",
        "sig",
    ];
    const SUFFIXES: [&str; 9] = [
        "password", "passwd", "-pw", "_pw", "token", "secret", "apikey", "api_key", "api-key",
    ];
    EXACT.contains(&key.as_str()) || SUFFIXES.iter().any(|s| key.ends_with(s))
}

/// The value after `=` at `start`: inside its quotes when quoted (GStreamer escapes `\"`), else
/// up to the next parameter separator or the end of the token.
fn value_span(text: &str, start: usize) -> (usize, usize) {
    let rest = &text[start..];
    if let Some(quote) = rest.chars().next().filter(|&c| c == '"' || c == '\'') {
        let inner = start + 1;
        let mut escaped = false;
        for (i, c) in text[inner..].char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                c if c == quote && !escaped => return (inner, inner + i),
                _ => escaped = false,
            }
        }
        return (inner, text.len());
    }
    let end = rest
        .find(|c: char| ends_token(c) || matches!(c, '&' | ';' | '#'))
        .map_or(text.len(), |e| start + e);
    (start, end)
}

fn mask_secret_values(text: &str) -> Cow<'_, str> {
    let is_key_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let mut out = String::new();
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = text[from..].find('=') {
        let eq = from + found;
        let key_start = text[..eq].rfind(|c: char| !is_key_char(c)).map_or(0, |p| {
            p + text[p..].chars().next().map_or(1, char::len_utf8)
        });
        let (v0, v1) = value_span(text, eq + 1);
        if is_secret_key(&text[key_start..eq]) && v1 > v0 {
            if &text[v0..v1] != MASK {
                out.push_str(&text[copied..v0]);
                out.push_str(MASK);
                copied = v1;
            }
            from = v1;
        } else {
            // Another value may hold secrets of its own (`location="rtsp://…?token=…"`).
            from = eq + 1;
        }
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(text: &str) -> String {
        redact(text).into_owned()
    }

    #[test]
    fn user_and_password_are_masked_and_the_rest_of_the_uri_kept() {
        assert_eq!(
            shown("rtsp://user:pass@cam.local/stream"),
            "rtsp://***@cam.local/stream"
        );
        assert_eq!(
            shown("rtsps://admin@cam.local:322/live?channel=1"),
            "rtsps://***@cam.local:322/live?channel=1"
        );
        // Characters RFC 3986 wants percent-encoded, typed as they are: still all hidden.
        assert_eq!(
            shown("rtsp://admin:P@ss/w#rd?1@10.0.0.7:554/h264"),
            "rtsp://***@10.0.0.7:554/h264"
        );
    }

    #[test]
    fn percent_encoded_credentials_are_masked_whole() {
        let r = shown("rtsp://us%40er:p%3As%2Fs@cam.local/stream");
        assert_eq!(r, "rtsp://***@cam.local/stream");
        assert!(!r.contains("%3A") && !r.contains("us%40er"), "{r}");
    }

    #[test]
    fn secret_query_values_are_masked_and_other_parameters_kept() {
        assert_eq!(
            shown("rtsp://cam.local/live?channel=2&password=hunter2&subtype=0"),
            "rtsp://cam.local/live?channel=2&password=***&subtype=0"
        );
        assert_eq!(
            shown("rtsp://cam.local/s?PASSWD=x1&token=abc.def&access_token=q#frag"),
            "rtsp://cam.local/s?PASSWD=***&token=***&access_token=***#frag"
        );
        assert_eq!(
            shown("rtsp://u:p@cam.local/s?user=admin&pwd=x"),
            "rtsp://***@cam.local/s?user=***&pwd=***"
        );
        // An empty value has nothing to hide.
        assert_eq!(shown("rtsp://cam/s?token="), "rtsp://cam/s?token=");
    }

    #[test]
    fn ipv6_hosts_keep_their_brackets_port_and_zone() {
        assert_eq!(
            shown("rtsp://user:pass@[fe80::1%25eth0]:8554/stream"),
            "rtsp://***@[fe80::1%25eth0]:8554/stream"
        );
        assert_eq!(
            shown("rtsp://[2001:db8::7]:554/stream"),
            "rtsp://[2001:db8::7]:554/stream"
        );
    }

    #[test]
    fn text_without_credentials_is_unchanged_and_borrowed() {
        for text in [
            "rtsp://cam.local:554/stream?channel=1&subtype=0",
            "csi://0",
            "v4l2:///dev/video0?width=1280&height=720&framerate=30&format=mjpeg",
            "file:///clips/reef.mp4",
            "test://ball",
            "videotestsrc pattern=ball ! video/x-raw,width=64,height=48",
            "",
        ] {
            assert!(
                matches!(redact(text), Cow::Borrowed(t) if t == text),
                "{text}"
            );
        }
    }

    #[test]
    fn launch_lines_lose_uri_credentials_and_credential_properties() {
        let line = r#"rtspsrc location="rtsp://u:s3cret@cam/s" user-id=admin user-pw="a b\"c" proxy-pw=pp latency=200 ! decodebin"#;
        assert_eq!(
            shown(line),
            r#"rtspsrc location="rtsp://***@cam/s" user-id=*** user-pw="***" proxy-pw=*** latency=200 ! decodebin"#
        );
    }

    #[test]
    fn redaction_is_idempotent() {
        for text in [
            "rtsp://user:pass@cam.local/stream?token=t",
            r#"souphttpsrc location=http://a:b@h/x user-pw="q""#,
        ] {
            let once = shown(text);
            assert_eq!(shown(&once), once);
        }
    }

    #[test]
    fn secret_text_shows_the_redacted_form_and_exposes_the_real_one_on_request() {
        let s = SecretText::new("rtsp://user:s3cret@cam.local/stream");
        assert_eq!(s.to_string(), "rtsp://***@cam.local/stream");
        assert!(!format!("{s:?}").contains("s3cret"));
        assert!(!format!("{s:#?}").contains("user"));
        assert_eq!(s.redacted(), "rtsp://***@cam.local/stream");
        assert_eq!(s.expose_secret(), "rtsp://user:s3cret@cam.local/stream");
    }
}
