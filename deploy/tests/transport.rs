//! The OpenSSH transport against a real sshd on loopback (the test fleet of `trident-e2e`):
//! scripts receive hostile values as plain words, a connection dropped mid-upload leaves a part
//! the next upload resumes from, a part that does not match is started over, and the finished
//! file is the local one byte for byte.

mod common;

use std::path::Path;

use common::unit;
use trident_deploy::ssh::Ssh;
use trident_e2e::fleet::TestFleet;

fn payload(dir: &Path, len: usize) -> std::path::PathBuf {
    // Bytes that do not repeat, so a misplaced chunk cannot go unnoticed.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let p = dir.join("payload.bin");
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn scripts_get_values_as_words_and_failures_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = TestFleet::start(dir.path(), &["reef-01"]);
    let ssh = Ssh {
        config: Some(fleet.ssh_config()),
    };
    let u = unit(&fleet, "reef-01");
    let hostile = "it's $(touch /tmp/pwned) `id`; echo";
    let out = ssh
        .check(
            &u,
            "echo",
            "printf '%s|%s' \"$1\" \"$TRIDENT_TEST_UNIT\"",
            &[hostile],
        )
        .unwrap();
    assert_eq!(out, format!("{hostile}|reef-01"));
    let e = ssh
        .check(&u, "fail", "echo 'disk on fire' >&2; exit 3", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("reef-01: fail: disk on fire"), "{e}");

    fleet.stop_unit("reef-01");
    let e = ssh.check(&u, "reach", "true", &[]).unwrap_err().to_string();
    assert!(e.contains("cannot reach the unit over SSH"), "{e}");
}

#[test]
fn a_dropped_upload_resumes_and_a_bad_part_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = TestFleet::start(dir.path(), &["reef-01"]);
    let ssh = Ssh {
        config: Some(fleet.ssh_config()),
    };
    let u = unit(&fleet, "reef-01");
    let local = payload(dir.path(), 3 << 20);
    let remote = u.remote("/opt/trident/incoming/pkg.tar.zst");

    let e = ssh
        .upload(&u, &local, &remote, &|_| {}, Some(1 << 20))
        .unwrap_err()
        .to_string();
    assert!(e.contains("dropped") && e.contains("resumes"), "{e}");
    let part = Path::new(&remote).with_extension("zst.part");
    let kept = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    assert!(kept > 0, "nothing of the first attempt is on the unit");
    assert!(!Path::new(&remote).exists());

    let up = ssh.upload(&u, &local, &remote, &|_| {}, None).unwrap();
    assert_eq!(up.resumed_from, kept, "{up:?}");
    assert_eq!(up.sent + up.resumed_from, up.total);
    assert_eq!(
        std::fs::read(&remote).unwrap(),
        std::fs::read(&local).unwrap()
    );
    assert!(!part.exists());

    // A part whose bytes are not a prefix of the file: started over, result still exact.
    std::fs::write(&part, vec![0u8; 1 << 20]).unwrap();
    std::fs::remove_file(&remote).unwrap();
    let up = ssh.upload(&u, &local, &remote, &|_| {}, None).unwrap();
    assert_eq!(up.resumed_from, 0, "{up:?}");
    assert_eq!(
        std::fs::read(&remote).unwrap(),
        std::fs::read(&local).unwrap()
    );
}

#[test]
fn facts_come_back_in_one_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = TestFleet::start(dir.path(), &["reef-01"]);
    let ssh = Ssh {
        config: Some(fleet.ssh_config()),
    };
    let u = unit(&fleet, "reef-01");
    fleet.unit("reef-01").set_disk_avail_kb(123_456);
    let f = trident_deploy::unit_facts::read(&ssh, &u).unwrap();
    let d = f.device.as_ref().unwrap();
    assert_eq!(f.arch, std::env::consts::ARCH);
    assert_eq!(d.l4t.as_deref(), Some("32.7.1"));
    assert_eq!(d.jetpack.as_deref(), Some("4.6.1"));
    assert_eq!(d.tensorrt.as_deref(), Some("8.2.1"));
    assert!(d.glibc.is_some());
    assert_eq!(f.disk_avail_kb, Some(123_456));
    assert!(f.mem_total_kb.unwrap() > 0);
    assert_eq!(f.current, None);
    assert!(!f.provisioned);
}
