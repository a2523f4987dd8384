//! The Ultralytics dataset layout: `dataset.yaml` + `images/<split>/` + `labels/<split>/*.txt`.
//!
//! ```yaml
//! path: .            # dataset root; relative paths resolve against this file's folder
//! train: images/train  # a folder, a .txt list of image paths, or a list of either
//! val: images/val
//! test: images/test    # optional
//! names: {0: lionfish, 1: urchin}   # or a list
//! ```
//!
//! Differences from Ultralytics, on purpose: a relative `path` resolves against the YAML file's
//! folder (not a global datasets directory), so a dataset folder can be moved as a whole.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, read_to_string};
use crate::geometry::BoxXywh;

/// Image file extensions a dataset may use (the ones the `image` crate decodes here).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    pub fn as_str(&self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "train" => Ok(Split::Train),
            "val" | "valid" | "validation" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            other => Err(format!(
                "unknown split `{other}` (expected train, val or test)"
            )),
        }
    }
}

#[derive(Deserialize)]
struct RawDataset {
    path: Option<String>,
    train: Option<Sources>,
    val: Option<Sources>,
    test: Option<Sources>,
    names: Names,
    nc: Option<usize>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Sources {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Names {
    List(Vec<String>),
    Map(BTreeMap<usize, String>),
}

/// A parsed, path-resolved `dataset.yaml`.
#[derive(Clone, Debug)]
pub struct DatasetConfig {
    /// The YAML file this came from (for messages).
    pub yaml_path: PathBuf,
    /// Dataset root after resolving `path`.
    pub root: PathBuf,
    pub names: Vec<String>,
    sources: BTreeMap<Split, Vec<PathBuf>>,
}

/// One image of a split and where its label file is (or would be).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageEntry {
    pub image: PathBuf,
    pub label: PathBuf,
    /// File name without extension: how prediction files refer to the image.
    pub stem: String,
}

/// Ground truth of one image, in pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageTruth {
    pub stem: String,
    pub width: u32,
    pub height: u32,
    /// `(class, box)` pairs.
    pub boxes: Vec<(usize, BoxXywh)>,
}

impl DatasetConfig {
    pub fn load(yaml_path: &Path) -> Result<Self> {
        let text = read_to_string(yaml_path)?;
        Self::parse(&text, yaml_path)
    }

    /// Parses YAML text; `yaml_path` anchors relative paths and names the file in errors.
    pub fn parse(text: &str, yaml_path: &Path) -> Result<Self> {
        let raw: RawDataset = crate::yaml::parse_yaml(text, yaml_path)?;
        let field = |name: &str| format!("{}: field `{name}`", yaml_path.display());
        let names = match raw.names {
            Names::List(v) => v,
            Names::Map(m) => {
                for (expected, key) in m.keys().enumerate() {
                    if *key != expected {
                        return Err(Error::invalid(
                            field("names"),
                            format!(
                                "class ids must be 0..{} without gaps; missing {expected}",
                                m.len()
                            ),
                        ));
                    }
                }
                m.into_values().collect()
            }
        };
        if names.is_empty() {
            return Err(Error::invalid(
                field("names"),
                "at least one class name is required",
            ));
        }
        if let Some(dup) = names
            .iter()
            .enumerate()
            .find_map(|(i, n)| names[..i].contains(n).then_some(n))
        {
            return Err(Error::invalid(
                field("names"),
                format!("class name `{dup}` appears twice"),
            ));
        }
        if let Some(nc) = raw.nc
            && nc != names.len()
        {
            return Err(Error::invalid(
                field("nc"),
                format!("nc = {nc} but `names` lists {} classes", names.len()),
            ));
        }
        let base = yaml_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let root = match raw.path.as_deref() {
            None | Some("") => base.clone(),
            Some(p) if Path::new(p).is_absolute() => PathBuf::from(p),
            Some(p) => base.join(p),
        };
        // `path: .` is the common case; keep `./` out of every path we print.
        let root: PathBuf = root
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect();
        let mut sources = BTreeMap::new();
        for (split, src) in [
            (Split::Train, raw.train),
            (Split::Val, raw.val),
            (Split::Test, raw.test),
        ] {
            let list = match src {
                None => continue,
                Some(Sources::One(s)) if s.trim().is_empty() => continue,
                Some(Sources::One(s)) => vec![s],
                Some(Sources::Many(v)) => v,
            };
            sources.insert(split, list.iter().map(|s| root.join(s)).collect());
        }
        for required in [Split::Train, Split::Val] {
            if !sources.contains_key(&required) {
                return Err(Error::invalid(
                    field(required.as_str()),
                    "missing: Ultralytics datasets need `train` and `val`",
                ));
            }
        }
        Ok(DatasetConfig {
            yaml_path: yaml_path.to_path_buf(),
            root,
            names,
            sources,
        })
    }

    pub fn num_classes(&self) -> usize {
        self.names.len()
    }

    pub fn has_split(&self, split: Split) -> bool {
        self.sources.contains_key(&split)
    }

    /// The folders or list files a split is read from.
    pub fn sources(&self, split: Split) -> &[PathBuf] {
        self.sources.get(&split).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The splits this dataset declares, in train/val/test order.
    pub fn splits(&self) -> Vec<Split> {
        self.sources.keys().copied().collect()
    }

    /// Every image of a split, sorted by path, with its label path.
    pub fn list_images(&self, split: Split) -> Result<Vec<ImageEntry>> {
        let sources = self.sources.get(&split).ok_or_else(|| {
            Error::invalid(
                format!("{}: field `{split}`", self.yaml_path.display()),
                "this dataset has no such split",
            )
        })?;
        let mut images = Vec::new();
        for src in sources {
            if src.is_dir() {
                collect_images(src, &mut images)?;
            } else if src.is_file() {
                read_image_list(src, &mut images)?;
            } else {
                return Err(Error::invalid(
                    format!("{}: field `{split}`", self.yaml_path.display()),
                    format!("{} does not exist", src.display()),
                ));
            }
        }
        images.sort();
        images.dedup();
        Ok(images
            .into_iter()
            .map(|image| {
                let stem = image
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                ImageEntry {
                    label: label_path_for(&image),
                    image,
                    stem,
                }
            })
            .collect())
    }
}

/// Writes a `dataset.yaml` for the standard layout under `dir` (`images/<split>` per split).
pub fn dataset_yaml(names: &[String], splits: &[Split]) -> String {
    let mut out = String::from("# Ultralytics-layout dataset written by trident\npath: .\n");
    for s in splits {
        out.push_str(&format!("{s}: images/{s}\n"));
    }
    out.push_str(&format!("nc: {}\nnames:\n", names.len()));
    for (i, n) in names.iter().enumerate() {
        out.push_str(&format!("  {i}: {}\n", yaml_scalar(n)));
    }
    out
}

fn yaml_scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' ' | '.'))
        && !s.starts_with([' ', '-', '.'])
        && !s.ends_with(' ')
        && !matches!(
            s,
            "null" | "true" | "false" | "yes" | "no" | "on" | "off" | "~"
        )
        && s.parse::<f64>().is_err();
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// `.../images/<rest>.jpg` → `.../labels/<rest>.txt` (the Ultralytics rule: last `images` folder).
pub fn label_path_for(image: &Path) -> PathBuf {
    let comps: Vec<_> = image.components().collect();
    let idx = comps
        .iter()
        .rposition(|c| c.as_os_str() == "images")
        .filter(|&i| i + 1 < comps.len());
    let mut out = PathBuf::new();
    for (i, c) in comps.iter().enumerate() {
        if Some(i) == idx {
            out.push("labels");
        } else {
            out.push(c.as_os_str());
        }
    }
    out.set_extension("txt");
    out
}

pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Appends every image file under `dir` (recursively) to `out`.
pub fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("cannot read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("cannot read directory", dir, e))?;
        let path = entry.path();
        if path.is_dir() {
            collect_images(&path, out)?;
        } else if is_image_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// A `.txt` list of image paths; `./x` lines are relative to the list's folder (Ultralytics rule).
fn read_image_list(list: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let text = read_to_string(list)?;
    let parent = list.parent().unwrap_or(Path::new(""));
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let p = Path::new(line);
        out.push(if p.is_absolute() {
            p.to_path_buf()
        } else {
            parent.join(line.trim_start_matches("./"))
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_as_map_or_list_and_resolves_paths() {
        let y = Path::new("/data/set/dataset.yaml");
        let a = DatasetConfig::parse(
            "path: .\ntrain: images/train\nval: images/val\nnames: {0: a, 1: b}\n",
            y,
        )
        .unwrap();
        assert_eq!(a.names, vec!["a", "b"]);
        assert_eq!(a.root, PathBuf::from("/data/set"));
        let b = DatasetConfig::parse("train: [t1, t2]\nval: v\ntest:\nnames: [x]\n", y).unwrap();
        assert_eq!(b.names, vec!["x"]);
        assert_eq!(b.splits(), vec![Split::Train, Split::Val]);
    }

    #[test]
    fn rejects_bad_schemas_naming_the_field() {
        let y = Path::new("d.yaml");
        let e = DatasetConfig::parse("train: a\nval: b\nnames: {0: a, 2: b}\n", y).unwrap_err();
        assert!(e.to_string().contains("field `names`"), "{e}");
        let e = DatasetConfig::parse("train: a\nval: b\nnc: 3\nnames: [a]\n", y).unwrap_err();
        assert!(e.to_string().contains("field `nc`"), "{e}");
        let e = DatasetConfig::parse("train: a\nnames: [a]\n", y).unwrap_err();
        assert!(e.to_string().contains("field `val`"), "{e}");
        let e = DatasetConfig::parse("train: a\nval: b\nnames: [a\n", y).unwrap_err();
        assert!(matches!(e, Error::Located { .. }), "{e}");
    }

    #[test]
    fn label_path_replaces_the_last_images_folder() {
        assert_eq!(
            label_path_for(Path::new("/d/images/x/images/val/a.b.jpg")),
            PathBuf::from("/d/images/x/labels/val/a.b.txt")
        );
    }

    #[test]
    fn written_yaml_parses_back() {
        let names: Vec<String> = vec!["lion fish".into(), "yes".into(), "3".into()];
        let text = dataset_yaml(&names, &Split::ALL);
        let d = DatasetConfig::parse(&text, Path::new("/x/dataset.yaml")).unwrap();
        assert_eq!(d.names, names);
        assert_eq!(d.splits(), Split::ALL.to_vec());
    }
}
