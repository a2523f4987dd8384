//! `trident data split`: a flat folder of images and labels → train/val/test, stratified.
//!
//! Multi-label iterative stratification (Sechidis et al., 2011) after a seeding pass that gives
//! every split one image of each class that has enough images, so that rare species are present
//! in every split whenever that is possible. Deterministic for a seed.
//!
//! With `group_by`, frames of one group — a dive, a clip, a site, read from the file name by a
//! regular expression — go to one split together: consecutive frames of a clip are nearly the
//! same picture, and one in train with its neighbour in val lets validation (which drives early
//! stopping, temperatures, fusion and thresholds) reward memorisation. Groups are stratified as
//! units, weighted by their images.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use trident_core::dataset::{Split, collect_images, dataset_yaml};
use trident_core::fsutil::StagingDir;
use trident_core::labels::parse_labels;

use crate::error::{Error, Result};

/// How image files reach the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileMode {
    /// Hard links (no extra space); falls back to copies across file systems.
    Link,
    Copy,
    /// Absolute symbolic links.
    Symlink,
}

#[derive(Clone, Debug)]
pub struct SplitOptions {
    pub images: PathBuf,
    pub labels: PathBuf,
    pub out: PathBuf,
    pub ratios: [f64; 3],
    pub seed: u64,
    pub force: bool,
    pub mode: FileMode,
    /// Class names; when absent, `classes.txt` beside the labels is used.
    pub names: Option<Vec<String>>,
    /// A regular expression over the file stem whose first capture group (or whole match) names
    /// the image's group; every image must match.
    pub group_by: Option<String>,
}

#[derive(Clone, Debug)]
pub struct SplitReport {
    pub names: Vec<String>,
    /// Images per split (train, val, test).
    pub images: [usize; 3],
    /// `images_with_class[split][class]`.
    pub images_with_class: [Vec<usize>; 3],
    /// `(class, split)` pairs with no image of that class (only where it could not be helped).
    pub missing: Vec<(usize, Split)>,
    /// Groups per split (train, val, test) when split by group.
    pub groups: Option<[usize; 3]>,
}

struct Item {
    image: PathBuf,
    label: Option<PathBuf>,
    stem: String,
    classes: BTreeSet<usize>,
}

pub fn split_dataset(opts: &SplitOptions, progress: &ProgressBar) -> Result<SplitReport> {
    let total: f64 = opts.ratios.iter().sum();
    if opts.ratios.iter().any(|r| !r.is_finite() || *r < 0.0)
        || opts.ratios[0] <= 0.0
        || opts.ratios[1] <= 0.0
        || total <= 0.0
    {
        return Err(Error::Option {
            option: "--ratios",
            message: "expected three non-negative fractions, train and val > 0, e.g. 0.7,0.15,0.15"
                .into(),
        });
    }
    let ratios = opts.ratios.map(|r| r / total);
    let names = match &opts.names {
        Some(n) => n.clone(),
        None => read_classes_txt(&opts.labels)?,
    };
    let mut items = collect_items(opts, names.len())?;
    if items.is_empty() {
        return Err(Error::Option {
            option: "--images",
            message: format!("no images found in {}", opts.images.display()),
        });
    }
    items.shuffle(&mut ChaCha8Rng::seed_from_u64(opts.seed));
    let units = match &opts.group_by {
        Some(pattern) => group_units(&items, pattern)?,
        None => (0..items.len()).map(|i| vec![i]).collect(),
    };
    let unit_split = stratify(&units_of(&items, &units, names.len()), names.len(), &ratios);
    let mut assignment = vec![0usize; items.len()];
    let mut groups = [0usize; 3];
    for (members, &s) in units.iter().zip(&unit_split) {
        groups[s] += 1;
        for &i in members {
            assignment[i] = s;
        }
    }

    let staging = StagingDir::new(&opts.out, opts.force)?;
    let used: Vec<Split> = Split::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| ratios[*i] > 0.0)
        .map(|(_, s)| s)
        .collect();
    for s in &used {
        for kind in ["images", "labels"] {
            let d = staging.path().join(kind).join(s.as_str());
            std::fs::create_dir_all(&d)
                .map_err(|e| trident_core::Error::io("cannot create directory", &d, e))?;
        }
    }
    progress.set_length(items.len() as u64);
    let mut report = SplitReport {
        names: names.clone(),
        images: [0; 3],
        images_with_class: std::array::from_fn(|_| vec![0; names.len()]),
        missing: Vec::new(),
        groups: opts.group_by.as_ref().map(|_| groups),
    };
    let mut warned_copy = false;
    for (item, &s) in items.iter().zip(&assignment) {
        let split = Split::ALL[s];
        let ext = item
            .image
            .extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dst = staging
            .path()
            .join("images")
            .join(split.as_str())
            .join(format!("{}.{ext}", item.stem));
        place_file(&item.image, &dst, opts.mode, &mut warned_copy)?;
        if let Some(label) = &item.label {
            let dst = staging
                .path()
                .join("labels")
                .join(split.as_str())
                .join(format!("{}.txt", item.stem));
            std::fs::copy(label, &dst)
                .map_err(|e| trident_core::Error::io("cannot copy label to", &dst, e))?;
        }
        report.images[s] += 1;
        for &c in &item.classes {
            report.images_with_class[s][c] += 1;
        }
        progress.inc(1);
    }
    let yaml = staging.path().join("dataset.yaml");
    std::fs::write(&yaml, dataset_yaml(&names, &used))
        .map_err(|e| trident_core::Error::io("cannot write", &yaml, e))?;
    staging.commit()?;
    for c in 0..names.len() {
        for (s, split) in Split::ALL.iter().enumerate() {
            if ratios[s] > 0.0 && report.images_with_class[s][c] == 0 {
                report.missing.push((c, *split));
            }
        }
    }
    Ok(report)
}

/// What stratification sees of a unit (an image, or a group of images that stay together).
struct Unit {
    /// Images in the unit.
    size: usize,
    /// Images of the unit holding each class (`images[c]`), and the classes present.
    images: Vec<usize>,
    classes: BTreeSet<usize>,
}

fn units_of(items: &[Item], units: &[Vec<usize>], num_classes: usize) -> Vec<Unit> {
    units
        .iter()
        .map(|members| {
            let mut images = vec![0usize; num_classes];
            for &i in members {
                for &c in &items[i].classes {
                    images[c] += 1;
                }
            }
            Unit {
                size: members.len(),
                classes: (0..num_classes).filter(|&c| images[c] > 0).collect(),
                images,
            }
        })
        .collect()
}

/// The images of each group named by `pattern` (first capture group, or the whole match, of
/// the file stem), groups in the order their first image comes in `items`.
fn group_units(items: &[Item], pattern: &str) -> Result<Vec<Vec<usize>>> {
    let re = regex::Regex::new(pattern).map_err(|e| Error::Option {
        option: "--group-by",
        message: format!("not a regular expression: {e}"),
    })?;
    let mut order: Vec<String> = Vec::new();
    let mut members: std::collections::HashMap<String, Vec<usize>> = Default::default();
    let mut unmatched = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let Some(caps) = re.captures(&it.stem) else {
            unmatched.push(it.image.display().to_string());
            continue;
        };
        let key = caps
            .get(1)
            .unwrap_or_else(|| caps.get(0).expect("a match has group 0"))
            .as_str()
            .to_string();
        members
            .entry(key.clone())
            .or_insert_with(|| {
                order.push(key);
                Vec::new()
            })
            .push(i);
    }
    if !unmatched.is_empty() {
        unmatched.sort();
        let shown = unmatched.len().min(5);
        return Err(Error::Option {
            option: "--group-by",
            message: format!(
                "`{pattern}` does not match the names of {} image(s), e.g. {}; every image needs a group",
                unmatched.len(),
                unmatched[..shown].join(", ")
            ),
        });
    }
    Ok(order
        .into_iter()
        .map(|k| members.remove(&k).expect("listed"))
        .collect())
}

/// Assigns each unit a split index.
fn stratify(items: &[Unit], num_classes: usize, ratios: &[f64; 3]) -> Vec<usize> {
    let n = items.len();
    let mut count = vec![0usize; num_classes];
    let mut total = 0usize;
    for it in items {
        total += it.size;
        for (c, k) in it.images.iter().enumerate() {
            count[c] += k;
        }
    }
    let mut want_total: Vec<f64> = ratios.iter().map(|r| r * total as f64).collect();
    let mut want: Vec<Vec<f64>> = ratios
        .iter()
        .map(|r| count.iter().map(|&k| r * k as f64).collect())
        .collect();
    let mut assigned: Vec<Option<usize>> = vec![None; n];
    let take = |i: usize,
                s: usize,
                assigned: &mut Vec<Option<usize>>,
                want: &mut Vec<Vec<f64>>,
                want_total: &mut Vec<f64>| {
        assigned[i] = Some(s);
        want_total[s] -= items[i].size as f64;
        for &c in &items[i].classes {
            want[s][c] -= items[i].images[c] as f64;
        }
    };
    let active: Vec<usize> = (0..3).filter(|&s| ratios[s] > 0.0).collect();
    let mut by_rarity: Vec<usize> = (0..num_classes).filter(|&c| count[c] > 0).collect();
    by_rarity.sort_by_key(|&c| (count[c], c));

    // Seeding: one image per (class, split) for every class with enough images.
    for &c in &by_rarity {
        // Enough units (images, or groups) holding the class to give each split one.
        if items.iter().filter(|u| u.classes.contains(&c)).count() < active.len() {
            continue;
        }
        for &s in active.iter().rev() {
            let has = (0..n).any(|i| assigned[i] == Some(s) && items[i].classes.contains(&c));
            if has {
                continue;
            }
            let pick = (0..n)
                .filter(|&i| assigned[i].is_none() && items[i].classes.contains(&c))
                .min_by_key(|&i| (items[i].classes.len(), items[i].size));
            if let Some(i) = pick {
                take(i, s, &mut assigned, &mut want, &mut want_total);
            }
        }
    }
    // Iterative stratification over the rest, rarest remaining class first.
    loop {
        let remaining = |c: usize, assigned: &Vec<Option<usize>>| {
            (0..n)
                .filter(|&i| assigned[i].is_none() && items[i].classes.contains(&c))
                .count()
        };
        let Some(c) = (0..num_classes)
            .map(|c| (remaining(c, &assigned), c))
            .filter(|(k, _)| *k > 0)
            .min()
            .map(|(_, c)| c)
        else {
            break;
        };
        for i in 0..n {
            if assigned[i].is_none() && items[i].classes.contains(&c) {
                let s = best_split(&active, |s| (want[s][c], want_total[s]));
                take(i, s, &mut assigned, &mut want, &mut want_total);
            }
        }
    }
    // Background images by overall quota.
    for i in 0..n {
        if assigned[i].is_none() {
            let s = best_split(&active, |s| (want_total[s], 0.0));
            take(i, s, &mut assigned, &mut want, &mut want_total);
        }
    }
    assigned
        .into_iter()
        .map(|a| a.expect("every item assigned"))
        .collect()
}

/// The split with the largest remaining demand; ties go to the earlier split.
fn best_split(active: &[usize], key: impl Fn(usize) -> (f64, f64)) -> usize {
    let mut best = active[0];
    for &s in &active[1..] {
        if key(s) > key(best) {
            best = s;
        }
    }
    best
}

fn collect_items(opts: &SplitOptions, num_classes: usize) -> Result<Vec<Item>> {
    let mut images = Vec::new();
    collect_images(&opts.images, &mut images)?;
    images.sort();
    let mut items = Vec::new();
    let mut problems = Vec::new();
    let mut stems = std::collections::HashMap::new();
    for image in images {
        let rel = image.strip_prefix(&opts.images).unwrap_or(&image);
        let label = opts.labels.join(rel).with_extension("txt");
        let stem = image
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(prev) = stems.insert(stem.clone(), image.clone()) {
            problems.push(format!(
                "{}: name `{stem}` is also used by {}; names must be unique",
                image.display(),
                prev.display()
            ));
        }
        let mut classes = BTreeSet::new();
        let label = match std::fs::read_to_string(&label) {
            Ok(text) => {
                let parsed = parse_labels(&text, num_classes);
                for i in parsed
                    .issues
                    .iter()
                    .filter(|i| i.severity == trident_core::labels::Severity::Error)
                {
                    problems.push(format!("{}:{}: {}", label.display(), i.line, i.message));
                }
                classes.extend(parsed.boxes.iter().map(|b| b.class));
                Some(label)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(trident_core::Error::io("cannot read", &label, e).into()),
        };
        items.push(Item {
            image,
            label,
            stem,
            classes,
        });
    }
    if problems.is_empty() {
        Ok(items)
    } else {
        Err(Error::Problems(problems))
    }
}

/// `classes.txt` (one name per line, the YOLO label-tool convention) in the labels folder or its parent.
fn read_classes_txt(labels: &Path) -> Result<Vec<String>> {
    for dir in [Some(labels), labels.parent()].into_iter().flatten() {
        let p = dir.join("classes.txt");
        if p.is_file() {
            let names: Vec<String> = trident_core::error::read_to_string(&p)?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            if names.is_empty() {
                return Err(trident_core::Error::invalid(
                    p.display().to_string(),
                    "no class names in the file",
                )
                .into());
            }
            return Ok(names);
        }
    }
    Err(Error::Option {
        option: "--names",
        message: format!(
            "class names are needed: pass --names a,b,c or put classes.txt in {}",
            labels.display()
        ),
    })
}

pub(crate) fn place_file(src: &Path, dst: &Path, mode: FileMode, warned: &mut bool) -> Result<()> {
    let io = |e| trident_core::Error::io("cannot write", dst, e);
    match mode {
        FileMode::Copy => std::fs::copy(src, dst).map(|_| ()).map_err(io)?,
        FileMode::Symlink => {
            let abs = std::fs::canonicalize(src)
                .map_err(|e| trident_core::Error::io("cannot read", src, e))?;
            symlink(&abs, dst).map_err(io)?
        }
        FileMode::Link => {
            if std::fs::hard_link(src, dst).is_err() {
                if !*warned {
                    tracing::warn!(
                        "hard links are not possible from {} to the output; copying instead",
                        src.display()
                    );
                    *warned = true;
                }
                std::fs::copy(src, dst).map_err(io)?;
            }
        }
    }
    Ok(())
}

#[cfg(unix)]
fn symlink(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(src, dst)
}

#[cfg(not(unix))]
fn symlink(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::copy(src, dst).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(classes: &[usize]) -> Item {
        named("", classes)
    }

    fn named(stem: &str, classes: &[usize]) -> Item {
        Item {
            image: PathBuf::from(format!("{stem}.jpg")),
            label: None,
            stem: stem.into(),
            classes: classes.iter().copied().collect(),
        }
    }

    /// Each image its own unit (no grouping).
    fn singles(items: &[Item], classes: usize) -> Vec<usize> {
        let units: Vec<Vec<usize>> = (0..items.len()).map(|i| vec![i]).collect();
        stratify(
            &units_of(items, &units, classes),
            classes,
            &[0.7, 0.15, 0.15],
        )
    }

    #[test]
    fn rare_classes_reach_every_split_and_ratios_hold() {
        // Class 2 is rare (3 images); plain random splitting would often miss a split.
        let mut items: Vec<Item> = (0..97).map(|i| item(&[i % 2])).collect();
        items.extend((0..3).map(|_| item(&[2])));
        let a = singles(&items, 3);
        for s in 0..3 {
            assert!(
                (0..items.len()).any(|i| a[i] == s && items[i].classes.contains(&2)),
                "class 2 missing from split {s}"
            );
        }
        let n_train = a.iter().filter(|&&s| s == 0).count();
        assert!((68..=72).contains(&n_train), "train has {n_train} of 100");
    }

    #[test]
    fn zero_ratio_split_gets_nothing() {
        let items: Vec<Item> = (0..20)
            .map(|i| item(if i % 4 == 0 { &[] } else { &[0] }))
            .collect();
        let units: Vec<Vec<usize>> = (0..items.len()).map(|i| vec![i]).collect();
        let a = stratify(&units_of(&items, &units, 1), 1, &[0.8, 0.2, 0.0]);
        assert!(a.iter().all(|&s| s < 2));
    }

    #[test]
    fn groups_stay_whole_and_still_reach_every_split() {
        // 20 dives of 5 frames; class 1 only in dives 0, 7 and 13.
        let mut items = Vec::new();
        for d in 0..20 {
            for f in 0..5 {
                let classes: &[usize] = if [0, 7, 13].contains(&d) {
                    &[0, 1]
                } else {
                    &[0]
                };
                items.push(named(&format!("dive{d:02}_f{f}"), classes));
            }
        }
        let units = group_units(&items, r"^(dive\d+)_").unwrap();
        assert_eq!(units.len(), 20);
        let a = stratify(&units_of(&items, &units, 2), 2, &[0.7, 0.15, 0.15]);
        let mut split_of_item = vec![0; items.len()];
        for (members, &s) in units.iter().zip(&a) {
            for &i in members {
                split_of_item[i] = s;
            }
        }
        for d in 0..20 {
            let splits: BTreeSet<usize> = (0..5).map(|f| split_of_item[d * 5 + f]).collect();
            assert_eq!(splits.len(), 1, "dive {d} crosses splits: {splits:?}");
        }
        for s in 0..3 {
            assert!(
                (0..items.len()).any(|i| split_of_item[i] == s && items[i].classes.contains(&1)),
                "the rare class misses split {s}"
            );
        }
        let train = split_of_item.iter().filter(|&&s| s == 0).count();
        assert!(
            (60..=80).contains(&train),
            "train has {train} of 100 frames"
        );
    }

    #[test]
    fn group_patterns_that_miss_images_or_do_not_parse_are_refused() {
        let items = vec![named("dive01_f1", &[0]), named("stray", &[0])];
        let e = group_units(&items, r"^(dive\d+)_").unwrap_err().to_string();
        assert!(e.contains("stray.jpg") && e.contains("--group-by"), "{e}");
        let e = group_units(&items, "(unclosed").unwrap_err().to_string();
        assert!(e.contains("not a regular expression"), "{e}");
        // Without a capture group the whole match is the key.
        let units = group_units(&items, "^[a-z]+").unwrap();
        assert_eq!(units, vec![vec![0], vec![1]]);
    }
}
