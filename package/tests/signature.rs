//! Keys, signing and verification, including interoperability with stock minisign.

use std::path::{Path, PathBuf};
use std::process::Command;

use trident_package::signature::{PUBLIC_KEY_FILE, SECRET_KEY_FILE};
use trident_package::{Error, PublicKey, SigningKey, generate_keypair, verify_file};

const MINISIGN: &str = "/usr/bin/minisign";

fn data(dir: &Path) -> PathBuf {
    let p = dir.join("trident-0.1.0-jetson-nano.tar.zst");
    std::fs::write(
        &p,
        (0..300_000u32).map(|i| (i % 253) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    p
}

fn keys(dir: &Path, password: Option<&str>) -> (SigningKey, PublicKey) {
    let (sk, pk) = generate_keypair(dir, password.map(str::to_string)).unwrap();
    (
        SigningKey::from_file(&sk, password.map(str::to_string)).unwrap(),
        PublicKey::from_file(&pk).unwrap(),
    )
}

#[test]
fn a_signature_verifies_and_says_who_signed_what() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, pk) = keys(&dir.path().join("keys"), None);
    assert_eq!(sk.key_id(), pk.key_id());
    assert_eq!(sk.public_key().key_id(), pk.key_id());
    let file = data(dir.path());
    let sig = dir.path().join("p.minisig");
    sk.sign_file(&file, &sig, "trident 0.1.0 jetson-nano")
        .unwrap();
    let info = verify_file(&file, &sig, &pk).unwrap();
    assert_eq!(info.key_id, pk.key_id());
    assert_eq!(info.trusted_comment, "trident 0.1.0 jetson-nano");
    assert!(
        std::fs::read_to_string(&sig)
            .unwrap()
            .starts_with("untrusted comment: ")
    );
}

#[cfg(unix)]
#[test]
fn generated_keys_are_private_and_never_overwritten() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (sk, pk) = generate_keypair(dir.path(), None).unwrap();
    assert_eq!(sk, dir.path().join(SECRET_KEY_FILE));
    assert_eq!(pk, dir.path().join(PUBLIC_KEY_FILE));
    assert_eq!(
        std::fs::metadata(&sk).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = std::fs::read(&sk).unwrap();
    let e = generate_keypair(dir.path(), None).unwrap_err().to_string();
    assert!(e.contains("refusing to overwrite"), "{e}");
    assert_eq!(std::fs::read(&sk).unwrap(), before);
    // The public key file reads like minisign's.
    let text = std::fs::read_to_string(&pk).unwrap();
    let id = PublicKey::from_file(&pk).unwrap().key_id();
    assert!(
        text.starts_with(&format!("untrusted comment: minisign public key {id}\nRW")),
        "{text}"
    );
}

#[test]
fn one_changed_byte_fails_verification_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, pk) = keys(dir.path(), None);
    let file = data(dir.path());
    let sig = dir.path().join("p.minisig");
    sk.sign_file(&file, &sig, "c").unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[150_000] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let e = verify_file(&file, &sig, &pk).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::Signature { .. }) && e.is_input_error());
    assert!(
        text.contains("trident-0.1.0-jetson-nano.tar.zst") && text.contains("changed"),
        "{text}"
    );
}

#[test]
fn a_signature_by_another_key_names_both_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (signer, _) = keys(&dir.path().join("a"), None);
    let (_, trusted) = keys(&dir.path().join("b"), None);
    let file = data(dir.path());
    let sig = dir.path().join("p.minisig");
    signer.sign_file(&file, &sig, "c").unwrap();
    let text = verify_file(&file, &sig, &trusted).unwrap_err().to_string();
    assert!(
        text.contains(&signer.key_id()) && text.contains(&trusted.key_id()),
        "{text}"
    );
}

#[test]
fn malformed_signatures_are_refused_with_the_expected_format() {
    let dir = tempfile::tempdir().unwrap();
    let (_, pk) = keys(dir.path(), None);
    let file = data(dir.path());
    let sig = dir.path().join("p.minisig");
    for bad in ["", "untrusted comment: x\nnot base64!\n", "just one line"] {
        std::fs::write(&sig, bad).unwrap();
        let text = verify_file(&file, &sig, &pk).unwrap_err().to_string();
        assert!(
            text.contains("p.minisig") && text.contains("trusted comment"),
            "{text}"
        );
    }
}

#[test]
fn signatures_are_hedged_so_two_runs_differ_but_both_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, pk) = keys(dir.path(), None);
    let file = data(dir.path());
    let (a, b) = (dir.path().join("a.minisig"), dir.path().join("b.minisig"));
    sk.sign_file(&file, &a, "same").unwrap();
    sk.sign_file(&file, &b, "same").unwrap();
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    verify_file(&file, &a, &pk).unwrap();
    verify_file(&file, &b, &pk).unwrap();
}

#[test]
fn an_encrypted_key_needs_its_password_and_never_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let (sk_path, pk_path) = generate_keypair(dir.path(), Some("hunter2".into())).unwrap();
    let key_line = std::fs::read_to_string(&sk_path)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    let missing = SigningKey::from_file(&sk_path, None)
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("encrypted") && missing.contains("no password"),
        "{missing}"
    );
    let wrong = SigningKey::from_file(&sk_path, Some("wrong".into()))
        .unwrap_err()
        .to_string();
    assert!(wrong.contains("wrong password"), "{wrong}");
    for text in [missing, wrong] {
        assert!(!text.contains(&key_line) && !text.contains("hunter2"));
    }
    let sk = SigningKey::from_file(&sk_path, Some("hunter2".into())).unwrap();
    assert!(!format!("{sk:?}").contains(&key_line[..20]));
    let file = data(dir.path());
    let sig = dir.path().join("p.minisig");
    sk.sign_file(&file, &sig, "c").unwrap();
    verify_file(&file, &sig, &PublicKey::from_file(&pk_path).unwrap()).unwrap();
}

#[test]
fn a_damaged_secret_key_is_refused_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let (sk_path, _) = generate_keypair(dir.path(), None).unwrap();
    let text = std::fs::read_to_string(&sk_path).unwrap();
    let line = text.lines().nth(1).unwrap();
    let damaged = format!("untrusted comment: k\n{}\n", &line[..line.len() - 8]);
    std::fs::write(&sk_path, &damaged).unwrap();
    let e = SigningKey::from_file(&sk_path, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("trident.key") && !e.contains(&line[..40]), "{e}");
}

#[test]
fn keys_from_the_environment_are_named_by_variable_never_by_content() {
    // Edition 2024 makes `set_var` unsafe (and the workspace forbids unsafe), so the variables
    // are given to a child run of this test binary: `from_env_child` below.
    let dir = tempfile::tempdir().unwrap();
    let (sk_path, pk_path) = generate_keypair(dir.path(), Some("s3cret".into())).unwrap();
    let key_text = std::fs::read_to_string(&sk_path).unwrap();
    let file = data(dir.path());
    let run = |password: Option<&str>| {
        // libtest's name of the child test: this module's path without the crate's name.
        let child = match module_path!().split_once("::") {
            Some((_, module)) => format!("{module}::from_env_child"),
            None => "from_env_child".to_string(),
        };
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", child.as_str(), "--nocapture", "--test-threads=1"])
            .env("TRIDENT_TEST_CHILD", dir.path())
            .env("TRIDENT_TEST_KEY", &key_text)
            .env_remove("TRIDENT_TEST_KEY_PASSWORD");
        if let Some(p) = password {
            cmd.env("TRIDENT_TEST_KEY_PASSWORD", p);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let out = run(None);
    let line = out
        .lines()
        .find(|l| l.contains("ERROR "))
        .expect(&out)
        .to_string();
    assert!(
        line.contains("environment variable TRIDENT_TEST_KEY")
            && line.contains("set environment variable TRIDENT_TEST_KEY_PASSWORD"),
        "{line}"
    );
    assert!(!line.contains(key_text.lines().nth(1).unwrap()));
    run(Some("s3cret"));
    let pk = PublicKey::from_file(&pk_path).unwrap();
    verify_file(&file, &dir.path().join("env.minisig"), &pk).unwrap();
    // An unset variable is named too.
    let e = SigningKey::from_env("TRIDENT_TEST_SURELY_UNSET_VAR", "X").unwrap_err();
    assert!(
        e.to_string()
            .contains("TRIDENT_TEST_SURELY_UNSET_VAR: is not set"),
        "{e}"
    );
}

/// The child half of the test above; does nothing unless run by it.
#[test]
fn from_env_child() {
    let Some(dir) = std::env::var_os("TRIDENT_TEST_CHILD") else {
        return;
    };
    let dir = PathBuf::from(dir);
    match SigningKey::from_env("TRIDENT_TEST_KEY", "TRIDENT_TEST_KEY_PASSWORD") {
        Ok(sk) => sk
            .sign_file(
                &dir.join("trident-0.1.0-jetson-nano.tar.zst"),
                &dir.join("env.minisig"),
                "from env",
            )
            .unwrap(),
        Err(e) => println!("ERROR {e}"),
    }
}

fn minisign() -> &'static str {
    assert!(
        Path::new(MINISIGN).exists(),
        "{MINISIGN} is missing: run `cargo xtask setup` (it installs the minisign package)"
    );
    MINISIGN
}

#[test]
fn stock_minisign_verifies_our_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, _) = keys(dir.path(), None);
    let file = data(dir.path());
    let sig = dir.path().join("p.minisig");
    sk.sign_file(&file, &sig, "trident 0.1.0").unwrap();
    let out = Command::new(minisign())
        .arg("-Vm")
        .arg(&file)
        .arg("-x")
        .arg(&sig)
        .arg("-p")
        .arg(dir.path().join(PUBLIC_KEY_FILE))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("trident 0.1.0"), "{text}");
    // And it refuses a changed file.
    std::fs::write(&file, b"changed").unwrap();
    let status = Command::new(minisign())
        .arg("-Vqm")
        .arg(&file)
        .arg("-x")
        .arg(&sig)
        .arg("-p")
        .arg(dir.path().join(PUBLIC_KEY_FILE))
        .output()
        .unwrap()
        .status;
    assert!(!status.success());
}

#[test]
fn keys_and_signatures_made_by_stock_minisign_work_here() {
    let dir = tempfile::tempdir().unwrap();
    let (sk_path, pk_path) = (dir.path().join("m.key"), dir.path().join("m.pub"));
    let out = Command::new(minisign())
        .args(["-G", "-W", "-p"])
        .arg(&pk_path)
        .arg("-s")
        .arg(&sk_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = data(dir.path());
    let out = Command::new(minisign())
        .args(["-S", "-s"])
        .arg(&sk_path)
        .arg("-m")
        .arg(&file)
        .args(["-t", "signed by minisign"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pk = PublicKey::from_file(&pk_path).unwrap();
    let sig = PathBuf::from(format!("{}.minisig", file.display()));
    let info = verify_file(&file, &sig, &pk).unwrap();
    assert_eq!(info.trusted_comment, "signed by minisign");
    // Its (unencrypted) secret key loads and signs for minisign's public key.
    let sk = SigningKey::from_file(&sk_path, None).unwrap();
    assert_eq!(sk.key_id(), pk.key_id());
    let ours = dir.path().join("ours.minisig");
    sk.sign_file(&file, &ours, "ours").unwrap();
    verify_file(&file, &ours, &pk).unwrap();
}
