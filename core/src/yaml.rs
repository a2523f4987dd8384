//! YAML for every config file, with errors that name the file, line and column — and, through
//! the locator ([`locate`], [`path_at`]), the field: a parse error names the field whose value
//! failed, and a validation error on a field path (`ladder[2].fps`) points at its line:column.

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::error::{Error, Result, read_to_string};

/// Parses YAML text into `T`, an error as `file:line:column: field: what` ([`Error::Located`]).
pub fn parse_located<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map_or((0, 0), |l| (l.line() as usize, l.column() as usize));
        let first = e.to_string();
        let first = first.lines().next().unwrap_or_default();
        let prefix = format!("error: line {line} column {column}: ");
        let message = first.strip_prefix(&prefix).unwrap_or(first).to_string();
        let message = match path_at(text, line, column) {
            Some(field) if !field.is_empty() => format!("{field}: {message}"),
            _ => message,
        };
        Error::Located {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    })
}

/// A validation failure of `field` (a path such as `ladder[2].fps`) in the YAML `text` read from
/// `path`, located at the field (or its nearest ancestor present in the file).
pub fn invalid_field(text: &str, path: &Path, field: &str, message: &str) -> Error {
    let (line, column) = locate(text, field).unwrap_or((0, 0));
    Error::Located {
        path: path.to_path_buf(),
        line,
        column,
        message: format!("{field}: {message}"),
    }
}

/// Parses YAML text; `path` names the source in errors ([`parse_located`]).
pub fn parse_yaml<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    parse_located(text, path)
}

/// `file:line:column: field` for a message about `field` (a path such as `fusion.iou_thr`) of
/// the YAML `text` read from `path`, located at the field or its nearest ancestor in the file;
/// `file: field` when nothing of it is there.
pub fn place(text: &str, path: &Path, field: &str) -> String {
    match locate(text, field) {
        Some((line, column)) => format!("{}:{line}:{column}: {field}", path.display()),
        None => format!("{}: {field}", path.display()),
    }
}

/// Reads and parses a YAML file.
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T> {
    parse_located(&read_to_string(path)?, path)
}

/// A YAML node with the location of every child, for mapping field paths to line:column.
enum Node {
    Map(Vec<(String, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Scalar,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_none<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<Node>>()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    entries.push((key, map.next_value::<Spanned<Node>>()?));
                }
                Ok(Node::Map(entries))
            }
        }
        deserializer.deserialize_any(NodeVisitor)
    }
}

/// Every node of the document as (field path, line, column).
fn index(text: &str) -> Vec<(String, usize, usize)> {
    fn walk(node: &Spanned<Node>, path: String, out: &mut Vec<(String, usize, usize)>) {
        let at = node.referenced;
        out.push((path.clone(), at.line() as usize, at.column() as usize));
        match &node.value {
            Node::Map(entries) => {
                for (key, child) in entries {
                    let child_path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(child, child_path, out);
                }
            }
            Node::Seq(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, format!("{path}[{i}]"), out);
                }
            }
            Node::Scalar => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(root) = serde_saphyr::from_str::<Spanned<Node>>(text) {
        walk(&root, String::new(), &mut out);
    }
    out
}

/// Line and column of the value at `field` (e.g. `ladder[2].fps`), or of its nearest ancestor
/// present in the file (a missing field points at its parent).
pub fn locate(text: &str, field: &str) -> Option<(usize, usize)> {
    let nodes = index(text);
    let mut path = field;
    loop {
        if let Some((_, line, column)) = nodes.iter().find(|(p, ..)| p == path) {
            return Some((*line, *column));
        }
        path = &path[..path.rfind(['.', '['])?];
    }
}

/// The deepest field path whose value starts at `line`:`column`, if any.
pub fn path_at(text: &str, line: usize, column: usize) -> Option<String> {
    index(text)
        .into_iter()
        .filter(|(_, l, c)| (*l, *c) == (line, column))
        .map(|(p, ..)| p)
        .max_by_key(String::len)
}
