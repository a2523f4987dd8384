//! The syntax of unit files as systemd reads it: lines, sections and `\` continuations, word
//! splitting with quotes and escapes, `%` specifiers, time spans, signal names.

use std::time::Duration;

use rustix::process::Signal;

use super::unit_file::UNIT;

/// `(line number, section, key, value)` of every assignment: comments (`#`, `;`) and blank
/// lines skipped, `\` continuations joined with a space (a comment line inside a continuation is
/// skipped, as systemd does).
pub(super) type Assignment = (usize, String, String, String);

pub(super) fn assignments(text: &str) -> Result<Vec<Assignment>, (usize, String)> {
    let mut out = Vec::new();
    let mut section: Option<String> = None;
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if pending.is_some() && (line.starts_with('#') || line.starts_with(';')) {
            continue;
        }
        let (start, mut joined) = match pending.take() {
            Some((start, so_far)) => (start, so_far + " " + line),
            None => {
                if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                    continue;
                }
                (n, line.to_string())
            }
        };
        if let Some(head) = joined.strip_suffix('\\') {
            joined = head.trim_end().to_string();
            pending = Some((start, joined));
            continue;
        }
        if joined.starts_with('[') {
            let name = joined
                .strip_prefix('[')
                .and_then(|s| s.strip_suffix(']'))
                .ok_or((start, format!("malformed section header {joined:?}")))?;
            section = Some(name.to_string());
            continue;
        }
        let (key, value) = joined
            .split_once('=')
            .ok_or((start, format!("not an assignment: {joined:?}")))?;
        let section = section
            .clone()
            .ok_or((start, "assignment outside of a section".to_string()))?;
        out.push((
            start,
            section,
            key.trim().to_string(),
            value.trim().to_string(),
        ));
    }
    if let Some((start, _)) = pending {
        return Err((start, "the file ends inside a `\\` continuation".into()));
    }
    Ok(out)
}

/// systemd's word splitting of a setting: whitespace separates, single and double quotes group,
/// C escapes (`\n`, `\t`, `\\`, `\"`, `\'`, `\ `) inside and outside quotes.
pub(crate) fn words(value: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match (c, quote) {
            ('\\', _) => {
                let e = chars
                    .next()
                    .ok_or("a trailing backslash (a continuation is only allowed at line end)")?;
                let ch = match e {
                    'n' => '\n',
                    't' => '\t',
                    '\\' | '"' | '\'' | ' ' => e,
                    _ => return Err(format!("the escape \\{e} is not modelled")),
                };
                word.get_or_insert_with(String::new).push(ch);
            }
            (q @ ('"' | '\''), None) => {
                quote = Some(q);
                word.get_or_insert_with(String::new);
            }
            (c, Some(q)) if c == q => quote = None,
            (c, None) if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    out.push(w);
                }
            }
            (c, _) => word.get_or_insert_with(String::new).push(c),
        }
    }
    if quote.is_some() {
        return Err("an unterminated quote".into());
    }
    out.extend(word);
    Ok(out)
}

/// systemd's `%` specifiers: the ones the stand-in can answer for this unit; any other is an
/// error (systemd would resolve it to something the test cannot know).
pub(super) fn specifiers(word: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('n') => out.push_str(UNIT),
            Some('N' | 'p' | 'P') => out.push_str("trident-edge"),
            Some('i' | 'I') => {}
            Some(s) => {
                return Err(format!(
                    "the specifier %{s} is not modelled (use %% for a literal %)"
                ));
            }
            None => return Err("a lone % at the end (use %% for a literal %)".into()),
        }
    }
    Ok(out)
}

pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// systemd's time spans: `90`, `5s`, `100ms`, `2min`, `1min 30s`, `1h`, `infinity` (`None`).
pub(crate) fn parse_timespan(v: &str) -> Option<Option<Duration>> {
    let v = v.trim();
    if v == "infinity" {
        return Some(None);
    }
    let mut total = 0f64;
    let mut rest = v;
    let mut any = false;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = rest[num_len..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "" | "s" | "sec" | "second" | "seconds" => 1.0,
            "us" | "usec" => 1e-6,
            "ms" | "msec" => 1e-3,
            "m" | "min" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * scale;
        any = true;
    }
    any.then(|| Some(Duration::from_secs_f64(total)))
}

/// systemd's `format_timespan`: `1min 30s`, `100ms`, `infinity`, `0`.
pub(crate) fn format_timespan(d: Option<Duration>) -> String {
    let Some(d) = d else {
        return "infinity".into();
    };
    let mut us = d.as_micros() as u64;
    if us == 0 {
        return "0".into();
    }
    let mut parts = Vec::new();
    for (unit, size) in [
        ("d", 86_400_000_000u64),
        ("h", 3_600_000_000),
        ("min", 60_000_000),
        ("s", 1_000_000),
        ("ms", 1_000),
        ("us", 1),
    ] {
        if us >= size {
            parts.push(format!("{}{unit}", us / size));
            us %= size;
        }
    }
    parts.join(" ")
}

pub(super) fn signal(v: &str) -> Result<(String, Signal), String> {
    let name = v.strip_prefix("SIG").unwrap_or(v);
    let sig = match name {
        "TERM" => Signal::TERM,
        "INT" => Signal::INT,
        "HUP" => Signal::HUP,
        "QUIT" => Signal::QUIT,
        "KILL" => Signal::KILL,
        "USR1" => Signal::USR1,
        "USR2" => Signal::USR2,
        "ABRT" => Signal::ABORT,
        _ => return Err(format!("{v:?} is not a signal the stand-in knows")),
    };
    Ok((format!("SIG{name}"), sig))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_spans_parse_like_systemd() {
        let s = |v| parse_timespan(v).unwrap().unwrap();
        assert_eq!(s("300"), Duration::from_secs(300));
        assert_eq!(s("5s"), Duration::from_secs(5));
        assert_eq!(s("2min"), Duration::from_secs(120));
        assert_eq!(s("1min 30s"), Duration::from_secs(90));
        assert_eq!(s("1min30s"), Duration::from_secs(90));
        assert_eq!(s("100ms"), Duration::from_millis(100));
        assert_eq!(parse_timespan("infinity"), Some(None));
        assert_eq!(parse_timespan("5 parsecs"), None);
        assert_eq!(parse_timespan(""), None);
        assert_eq!(format_timespan(Some(Duration::from_secs(90))), "1min 30s");
        assert_eq!(format_timespan(Some(Duration::from_millis(100))), "100ms");
    }

    #[test]
    fn words_quotes_and_continuations() {
        assert_eq!(
            words(r#"A=1 "B=two words" C='x y'z"#).unwrap(),
            ["A=1", "B=two words", "C=x yz"]
        );
        let a =
            assignments("[Service]\nExecStart=/bin/x \\\n  # skipped\n  --flag \\\n  v\n").unwrap();
        assert_eq!(a[0].3, "/bin/x --flag v");
        assert!(words("\"open").is_err());
    }
}
