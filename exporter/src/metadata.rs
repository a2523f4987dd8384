//! `metadata_props` of exported graphs, in Ultralytics' conventions (so tools that read theirs
//! read ours) plus trident's own keys.

use trident_core::checkpoint::CheckpointMeta;

/// Python's `repr` of a plain string, as Ultralytics writes names (`{0: 'fish', 1: "o'hare"}`).
pub fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::from(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// `{0: 'a', 1: 'b'}`.
pub fn names_dict(names: &[String]) -> String {
    let items: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{i}: {}", py_repr(n)))
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// The metadata of a graph exported from a checkpoint.
pub fn for_checkpoint(
    meta: &CheckpointMeta,
    imgsz: u32,
    batch: &str,
    checkpoint_sha256: &str,
) -> Vec<(String, String)> {
    let spec = &meta.spec;
    let max_stride = spec.strides.iter().copied().max().unwrap_or(32);
    let mut m = vec![
        (
            "description".into(),
            format!(
                "trident {} detector",
                spec.preset.as_deref().unwrap_or("custom")
            ),
        ),
        ("author".into(), "trident".into()),
        ("version".into(), env!("CARGO_PKG_VERSION").into()),
        ("task".into(), "detect".into()),
        ("batch".into(), batch.into()),
        ("stride".into(), max_stride.to_string()),
        ("imgsz".into(), format!("[{imgsz}, {imgsz}]")),
        ("names".into(), names_dict(&spec.names)),
        ("trident_version".into(), env!("CARGO_PKG_VERSION").into()),
        ("strides".into(), format!("{:?}", spec.strides)),
        ("conf_floor".into(), meta.conf_floor.to_string()),
        ("source_sha256".into(), checkpoint_sha256.into()),
        (
            "spec".into(),
            serde_json::to_string(spec).expect("spec serialises"),
        ),
    ];
    if let Some(v) = &meta.variant {
        m.push(("variant".into(), v.clone()));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_written_as_python_dicts() {
        let names = vec![
            "lionfish".to_string(),
            "o'hare".to_string(),
            "back\\slash".to_string(),
        ];
        assert_eq!(
            names_dict(&names),
            r#"{0: 'lionfish', 1: "o'hare", 2: 'back\\slash'}"#
        );
        assert_eq!(py_repr(r#"a'b"c"#), r#"'a\'b"c'"#);
    }
}
