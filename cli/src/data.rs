//! `trident data synth|check|split|import`.

use std::process::ExitCode;

use anyhow::Context;
use trident_data::check::check_dataset;
use trident_data::import::{ImportOptions, import_coco};
use trident_data::split::{FileMode, SplitOptions, split_dataset};
use trident_data::synth::{Layout, SynthConfig, synthesize};

use crate::cli::{
    CheckArgs, DataCommand, FileModeArg, ImportArgs, LayoutArg, SplitArgs, SynthArgs,
};
use crate::ui::{progress, table};

pub fn run(command: DataCommand) -> anyhow::Result<ExitCode> {
    match command {
        DataCommand::Synth(a) => synth(a),
        DataCommand::Check(a) => check(a),
        DataCommand::Split(a) => split(a),
        DataCommand::Import(a) => import(a),
    }
}

fn synth(a: SynthArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = match &a.config {
        Some(p) => SynthConfig::load(p)?,
        None => SynthConfig::default(),
    };
    if let Some(v) = a.images {
        cfg.images = v
    }
    if let Some(v) = a.seed {
        cfg.seed = v
    }
    if let Some(v) = a.width {
        cfg.width = v
    }
    if let Some(v) = a.height {
        cfg.height = v
    }
    if let Some(v) = a.classes {
        cfg.classes = v.into_iter().map(|s| s.trim().to_string()).collect()
    }
    if let Some(v) = a.layout {
        cfg.layout = match v {
            LayoutArg::Split => Layout::Split,
            LayoutArg::Flat => Layout::Flat,
        }
    }
    let bar = progress("synth");
    let start = std::time::Instant::now();
    let s = synthesize(&cfg, &a.out, a.force, &bar)
        .with_context(|| format!("synthesising into {}", a.out.display()))?;
    bar.finish_and_clear();
    let splits = match cfg.layout {
        Layout::Split => format!(
            "{} train, {} val, {} test; ",
            s.images[0], s.images[1], s.images[2]
        ),
        Layout::Flat => String::new(),
    };
    println!(
        "wrote {} images ({splits}{} background) with {} boxes to {} in {:.1} s",
        cfg.images,
        s.backgrounds,
        s.boxes,
        a.out.display(),
        start.elapsed().as_secs_f64()
    );
    let rows: Vec<Vec<String>> = cfg
        .classes
        .iter()
        .zip(&s.boxes_per_class)
        .map(|(n, k)| vec![n.clone(), k.to_string()])
        .collect();
    print!("{}", table(&["class", "boxes"], &rows));
    match cfg.layout {
        Layout::Split => println!("dataset: {}", a.out.join("dataset.yaml").display()),
        Layout::Flat => println!("pool: {} (images/, labels/, classes.txt)", a.out.display()),
    }
    Ok(ExitCode::SUCCESS)
}

fn check(a: CheckArgs) -> anyhow::Result<ExitCode> {
    let bar = progress("check");
    let report = check_dataset(&a.data, &bar)?;
    bar.finish_and_clear();
    let mut header = vec!["split", "images", "background", "boxes"];
    header.extend(report.names.iter().map(String::as_str));
    let rows: Vec<Vec<String>> = report
        .splits
        .iter()
        .map(|s| {
            let mut r = vec![
                s.split.to_string(),
                s.images.to_string(),
                s.backgrounds.to_string(),
                s.boxes().to_string(),
            ];
            r.extend(s.boxes_per_class.iter().map(|k| k.to_string()));
            r
        })
        .collect();
    print!("{}", table(&header, &rows));
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for e in &report.errors {
        eprintln!("{e}");
    }
    if report.is_ok() {
        println!(
            "{}: ok ({} warning(s))",
            a.data.display(),
            report.warnings.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: {}: {} problem(s)",
            a.data.display(),
            report.errors.len()
        );
        Ok(ExitCode::from(2))
    }
}

fn split(a: SplitArgs) -> anyhow::Result<ExitCode> {
    if a.ratios.len() != 3 {
        return Err(trident_data::Error::Option {
            option: "--ratios",
            message: format!(
                "expected three fractions train,val,test; got {}",
                a.ratios.len()
            ),
        }
        .into());
    }
    let opts = SplitOptions {
        images: a.images,
        labels: a.labels,
        out: a.out.clone(),
        ratios: [a.ratios[0], a.ratios[1], a.ratios[2]],
        seed: a.seed,
        force: a.force,
        mode: file_mode(a.mode),
        names: a.names,
        group_by: a.group_by,
    };
    let bar = progress("split");
    let r = split_dataset(&opts, &bar)
        .with_context(|| format!("splitting into {}", a.out.display()))?;
    bar.finish_and_clear();
    let mut header = vec!["split", "images"];
    header.extend(r.names.iter().map(String::as_str));
    let rows: Vec<Vec<String>> = ["train", "val", "test"]
        .iter()
        .enumerate()
        .map(|(s, name)| {
            let mut row = vec![name.to_string(), r.images[s].to_string()];
            row.extend(r.images_with_class[s].iter().map(|k| k.to_string()));
            row
        })
        .collect();
    print!("{}", table(&header, &rows));
    for (c, s) in &r.missing {
        tracing::warn!(
            "class `{}` has no image in the {s} split (too few images of it)",
            r.names[*c]
        );
    }
    if let Some([tr, va, te]) = r.groups {
        println!("groups kept whole: {tr} in train, {va} in val, {te} in test");
    }
    println!("dataset: {}", a.out.join("dataset.yaml").display());
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn file_mode(m: FileModeArg) -> FileMode {
    match m {
        FileModeArg::Link => FileMode::Link,
        FileModeArg::Copy => FileMode::Copy,
        FileModeArg::Symlink => FileMode::Symlink,
    }
}

fn import(a: ImportArgs) -> anyhow::Result<ExitCode> {
    let coco = a.coco.expect("clap requires a format");
    let names = match &a.data {
        Some(yaml) => Some(trident_core::dataset::DatasetConfig::load(yaml)?.names),
        None => None,
    };
    let opts = ImportOptions {
        coco: coco.clone(),
        images: a.images,
        out: a.out.clone(),
        names,
        force: a.force,
        mode: file_mode(a.mode),
    };
    let bar = progress("import");
    let r = import_coco(&opts, &bar)
        .with_context(|| format!("importing {} into {}", coco.display(), a.out.display()))?;
    bar.finish_and_clear();
    let rows: Vec<Vec<String>> = r
        .names
        .iter()
        .zip(&r.per_class)
        .map(|(n, k)| vec![n.clone(), k.to_string()])
        .collect();
    print!("{}", table(&["class", "boxes"], &rows));
    println!(
        "{} images ({} without boxes), {} boxes{} → {}",
        r.images,
        r.background,
        r.boxes,
        if r.crowd_skipped > 0 {
            format!(", {} crowd annotations left out", r.crowd_skipped)
        } else {
            String::new()
        },
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
