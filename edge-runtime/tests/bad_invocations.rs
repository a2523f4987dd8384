//! Every bad flag, bad file and bad value of `trident-edge` exits with status 2, says what is
//! wrong and writes nothing (`trident_core::blame`: the one rule both binaries follow).

use std::path::Path;

#[test]
fn bad_invocations_exit_2_name_the_problem_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    std::fs::write(cwd.join("broken.yaml"), "name: x\ntarget_fps: [\n").unwrap();
    std::fs::create_dir(cwd.join("empty")).unwrap();
    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/profiles/host-cpu.yaml");
    let profile = profile.to_str().unwrap();
    let run = |extra: &'static [&'static str]| -> Vec<&str> {
        let mut a = vec![
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
        a.extend(extra);
        a
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
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
            vec!["prepare", "--models", "empty", "--precision", "fp8"],
            "--precision",
        ),
        (vec!["health", "--addr", "nowhere"], "--addr"),
        (vec!["bench", "--models", "empty", "--idle=-1"], "--idle"),
        (vec!["no-such-command"], "no-such-command"),
        // Files that are missing or malformed.
        (
            vec![
                "run",
                "--models",
                "empty",
                "--profile",
                "missing.yaml",
                "--source",
                "test://ball",
                "--http",
                "off",
                "--out",
                "out",
            ],
            "missing.yaml",
        ),
        (
            vec![
                "run",
                "--models",
                "empty",
                "--profile",
                "broken.yaml",
                "--source",
                "test://ball",
                "--http",
                "off",
                "--out",
                "out",
            ],
            "broken.yaml",
        ),
        (run(&[]), "empty"),
        (
            vec!["verify", "missing.tar.zst", "--pubkey", "missing.pub"],
            "--pubkey",
        ),
        (vec!["doctor", "--package", "missing", "--json"], "missing"),
    ];
    let cases: Vec<(&[&str], &str)> = cases.iter().map(|(a, w)| (a.as_slice(), *w)).collect();
    trident_e2e::invocations::assert_refused(
        Path::new(env!("CARGO_BIN_EXE_trident-edge")),
        cwd,
        &cases,
    );
}
