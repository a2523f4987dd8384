//! Every bad flag, bad file and bad value of `trident-edge` exits with status 2, says what is
//! wrong and writes nothing (`trident_core::blame`: the one rule both binaries follow).

use std::path::Path;

#[test]
fn bad_invocations_exit_2_name_the_problem_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    std::fs::write(cwd.join("broken.yaml"), "name: x\ntarget_fps: [\n").unwrap();
    std::fs::create_dir(cwd.join("empty")).unwrap();
    let host_cpu = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/profiles/host-cpu.yaml");
    let host_cpu = host_cpu.to_str().unwrap();
    // `run` on the empty models folder with `profile` and `extra` flags.
    let run_with = |profile: &str, extra: &[&str]| -> Vec<String> {
        let base = [
            "run",
            "--models",
            "empty",
            "--profile",
            profile,
            "--source",
            "test://ball",
            "--http",
            "off",
            "--out",
            "out",
        ];
        base.iter().chain(extra).map(|a| a.to_string()).collect()
    };
    let run = |extra: &[&str]| run_with(host_cpu, extra);
    let words = |args: &[&str]| -> Vec<String> { args.iter().map(|a| a.to_string()).collect() };
    let cases: Vec<(Vec<String>, &str)> = vec![
        // Flags out of range or of the wrong kind: refused before anything loads.
        (run(&["--conf", "2"]), "--conf"),
        (run(&["--backend", "cuda"]), "--backend"),
        (run(&["--snapshot-every", "0s"]), "--snapshot-every"),
        (
            run(&["--snapshot-min-score", "1.5"]),
            "--snapshot-min-score",
        ),
        (run(&["--snapshot-keep", "0"]), "--snapshot-keep"),
        (
            run(&["--http-max-connections", "0"]),
            "--http-max-connections",
        ),
        (run(&["--stall-after", "0s"]), "--stall-after"),
        (run(&["--log-buffer-mib", "0"]), "--log-buffer-mib"),
        (run(&["--http", "localhost"]), "--http"),
        (run(&["--duration", "10 parsecs"]), "--duration"),
        (
            words(&["prepare", "--models", "empty", "--precision", "fp8"]),
            "--precision",
        ),
        (words(&["health", "--addr", "nowhere"]), "--addr"),
        (
            words(&["bench", "--models", "empty", "--idle=-1"]),
            "--idle",
        ),
        (words(&["no-such-command"]), "no-such-command"),
        // Files that are missing or malformed.
        (run_with("missing.yaml", &[]), "missing.yaml"),
        (run_with("broken.yaml", &[]), "broken.yaml"),
        (run(&[]), "empty"),
        (
            words(&["verify", "missing.tar.zst", "--pubkey", "missing.pub"]),
            "--pubkey",
        ),
        (
            words(&["doctor", "--package", "missing", "--json"]),
            "missing",
        ),
    ];
    let args: Vec<Vec<&str>> = cases
        .iter()
        .map(|(a, _)| a.iter().map(String::as_str).collect())
        .collect();
    let cases: Vec<(&[&str], &str)> = args
        .iter()
        .zip(&cases)
        .map(|(a, (_, w))| (a.as_slice(), *w))
        .collect();
    trident_e2e::invocations::assert_refused(
        Path::new(env!("CARGO_BIN_EXE_trident-edge")),
        cwd,
        &cases,
    );
}
