//! Terminal plumbing shared by the commands: logging, progress bars, exit statuses.

use indicatif::{ProgressBar, ProgressStyle};
use tracing_subscriber::EnvFilter;

pub fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// A progress bar on stderr; indicatif hides it when stderr is not a terminal.
pub fn progress(message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}

/// Set in the environment of child processes whose progress bars would garble the terminal.
pub const NO_PROGRESS: &str = "TRIDENT_NO_PROGRESS";

/// A progress bar for a training epoch: the message carries the running losses and throughput.
pub fn epoch_progress(len: u64, message: String) -> ProgressBar {
    // Concurrent training jobs share the terminal: their bars stay hidden (see train.rs).
    if std::env::var_os(NO_PROGRESS).is_some() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:25}] {pos}/{len} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}

/// 2 when the input is at fault (bad files, bad options), 1 for everything else: the one rule of
/// `trident_core::blame`, which every library's error type registers with.
pub fn exit_status(err: &anyhow::Error) -> u8 {
    trident_core::blame::exit_status(err.chain())
}

/// A plain text table: the first column left-aligned, the others (numbers) right-aligned.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    render(header, rows, |i| i > 0)
}

/// A plain text table, every column left-aligned (for words: unit names, results, notes).
pub fn text_table(header: &[&str], rows: &[Vec<String>]) -> String {
    render(header, rows, |_| false)
}

fn render(header: &[&str], rows: &[Vec<String>], right: impl Fn(usize) -> bool) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let text = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if right(i) {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ");
        format!("{}\n", text.trim_end())
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}
