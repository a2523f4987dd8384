//! Every bad flag, bad file and bad value of `trident` exits with status 2, says what is wrong
//! and writes nothing (`trident_core::blame`: the one rule both binaries follow).

use std::path::Path;

const TRAINING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/training.yaml");

#[test]
fn bad_invocations_exit_2_name_the_problem_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    std::fs::write(cwd.join("broken.yaml"), "names: [a, b\n").unwrap();
    std::fs::write(cwd.join("notes.txt"), "not a checkpoint").unwrap();
    std::fs::create_dir(cwd.join("empty")).unwrap();
    let cases: &[(&[&str], &str)] = &[
        // Flags out of range or of the wrong kind.
        (
            &[
                "export",
                "--checkpoint",
                "x.safetensors",
                "--verify-images",
                "0",
            ],
            "--verify-images",
        ),
        (
            &[
                "export",
                "--checkpoint",
                "x.safetensors",
                "--fp16-max-drop=-1",
            ],
            "--fp16-max-drop",
        ),
        (
            &[
                "export",
                "--checkpoint",
                "x.safetensors",
                "--precision",
                "fp8",
            ],
            "--precision",
        ),
        (
            &["export", "--package", "--config", "r.yaml", "--half"],
            "--half",
        ),
        (
            &[
                "predict", "--models", "m", "--source", "s", "--out", "o.json", "--conf", "1.5",
            ],
            "--conf",
        ),
        (
            &[
                "predict", "--models", "m", "--source", "s", "--out", "o.json", "--fusion", "avg",
            ],
            "--fusion",
        ),
        (
            &[
                "predict",
                "--models",
                "m",
                "--source",
                "s",
                "--out",
                "o.json",
                "--backend",
                "cuda",
            ],
            "--backend",
        ),
        (
            &[
                "calibrate",
                "--models",
                "m",
                "--data",
                "d.yaml",
                "--out",
                "c",
                "--backend",
                "gpu",
            ],
            "--backend",
        ),
        (
            &["fuse", "a.json", "--out", "f.json", "--conf-type", "median"],
            "--conf-type",
        ),
        (
            &["fuse", "a.json", "--out", "f.json", "--method", "soft"],
            "--method",
        ),
        (&["train", "--epochs", "many"], "--epochs"),
        (
            &["train", "--weights", "w.safetensors", "--resume"],
            "--resume",
        ),
        (&["train", "--freeze", "many"], "--freeze"),
        (
            &[
                "val",
                "--models",
                "m",
                "--data",
                "d.yaml",
                "--min-recall",
                "2",
            ],
            "--min-recall",
        ),
        (&["val", "--data", "d.yaml"], "--checkpoint"),
        (
            &[
                "select",
                "--models",
                "m",
                "--source",
                "s",
                "--out",
                "p.zip",
                "--strategy",
                "random",
            ],
            "--strategy",
        ),
        (
            &[
                "select", "--models", "m", "--source", "s", "--out", "p.zip", "--band", "0.7,0.3",
            ],
            "--band",
        ),
        (
            &[
                "select",
                "--checkpoint",
                "a.safetensors",
                "--source",
                "s",
                "--out",
                "p.zip",
                "--strategy",
                "disagreement",
            ],
            "disagreement",
        ),
        (
            &["select", "--models", "m", "--source", "s", "--out", "p.txt"],
            ".zip",
        ),
        (
            &[
                "select", "--models", "m", "--source", "s", "--out", "p.zip", "--num", "0",
            ],
            "--num",
        ),
        (
            &["data", "import", "--images", "empty", "--out", "imported"],
            "--coco",
        ),
        (&["mine", "--checkpoint", "a.safetensors"], "--source"),
        (
            &["mine", "--checkpoint", "a.safetensors", "--source", "empty"],
            "--out",
        ),
        (&["no-such-command"], "no-such-command"),
        // Files that are missing or malformed.
        (
            &["eval", "--data", "missing.yaml", "--predictions", "p.json"],
            "missing.yaml",
        ),
        (
            &["eval", "--data", "broken.yaml", "--predictions", "p.json"],
            "broken.yaml",
        ),
        (&["data", "check", "--data", "missing.yaml"], "missing.yaml"),
        (
            &[
                "data",
                "import",
                "--coco",
                "missing.json",
                "--images",
                "empty",
                "--out",
                "imported",
            ],
            "missing.json",
        ),
        (
            &[
                "data",
                "import",
                "--coco",
                "notes.txt",
                "--images",
                "empty",
                "--out",
                "imported",
            ],
            "notes.txt",
        ),
        (
            &["val", "--checkpoint", "notes.txt", "--data", "broken.yaml"],
            "broken.yaml",
        ),
        (
            &[
                "train",
                "--config",
                TRAINING,
                "--data",
                "d.yaml",
                "--weights",
                "notes.txt",
            ],
            "notes.txt",
        ),
        (
            &["train", "--config", "missing.yaml", "--data", "broken.yaml"],
            "missing.yaml",
        ),
        (
            &["export", "--checkpoint", "notes.txt", "--out", "models"],
            "notes.txt",
        ),
        (
            &[
                "predict", "--models", "empty", "--source", "empty", "--out", "o.json",
            ],
            "empty",
        ),
        (
            &["package", "build", "--config", "missing.yaml", "--unsigned"],
            "missing.yaml",
        ),
        (
            &["package", "verify", "missing.tar.zst", "--allow-unsigned"],
            "missing.tar.zst",
        ),
        (
            &["deploy", "status", "--inventory", "missing.yaml"],
            "missing.yaml",
        ),
        (
            &["deploy", "status", "--inventory", "broken.yaml"],
            "broken.yaml",
        ),
    ];
    trident_e2e::invocations::assert_refused(Path::new(env!("CARGO_BIN_EXE_trident")), cwd, cases);
}
