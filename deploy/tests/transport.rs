//! The OpenSSH transport against a real sshd on loopback (the test fleet of `trident-e2e`):
//! scripts receive hostile values as plain words, a connection dropped mid-upload leaves a part
//! the next upload resumes from (by the chunked copy or by rsync, whichever left it), a part that
//! does not match is started over or corrected, and the finished file is the local one byte for
//! byte.

use crate::common;

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use common::unit;
use trident_deploy::ssh::{Ssh, Transfer};
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

fn ssh(fleet: &TestFleet, transfer: Transfer) -> Ssh {
    Ssh {
        config: Some(fleet.ssh_config()),
        transfer,
        shared: None,
    }
}

/// The part of a remote path (the unit's files are this machine's, under its root prefix).
fn part_of(remote: &str) -> PathBuf {
    PathBuf::from(format!("{remote}.part"))
}

/// Leaves a part of an upload cut after `after` bytes (the chunked copy: rsync cannot be cut).
fn drop_upload(
    ssh: &Ssh,
    u: &trident_deploy::inventory::Unit,
    local: &Path,
    remote: &str,
    after: u64,
) -> u64 {
    let e = ssh
        .upload(u, local, remote, &|_| {}, Some(after))
        .unwrap_err()
        .to_string();
    assert!(e.contains("dropped") && e.contains("resumes"), "{e}");
    let kept = std::fs::metadata(part_of(remote))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(kept > 0, "nothing of the first attempt is on the unit");
    assert!(!Path::new(remote).exists());
    kept
}

fn assert_same(remote: &str, local: &Path) {
    assert!(
        std::fs::read(remote).unwrap() == std::fs::read(local).unwrap(),
        "{remote} differs from {}",
        local.display()
    );
    assert!(!part_of(remote).exists(), "the part is left behind");
}

#[test]
fn scripts_get_values_as_words_and_failures_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = TestFleet::start(dir.path(), &["reef-01"]);
    let ssh = Ssh {
        config: Some(fleet.ssh_config()),
        ..Default::default()
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
    let ssh = ssh(&fleet, Transfer::Chunked);
    let u = unit(&fleet, "reef-01");
    let local = payload(dir.path(), 3 << 20);
    let remote = u.remote("/opt/trident/incoming/pkg.tar.zst");
    let part = part_of(&remote);

    let kept = drop_upload(&ssh, &u, &local, &remote, 1 << 20);
    let up = ssh.upload(&u, &local, &remote, &|_| {}, None).unwrap();
    assert_eq!(up.via, Transfer::Chunked);
    assert_eq!(up.resumed_from, kept, "{up:?}");
    assert_eq!(up.sent + up.resumed_from, up.total);
    assert_same(&remote, &local);

    // A part whose bytes are not a prefix of the file: started over, result still exact.
    std::fs::write(&part, vec![0u8; 1 << 20]).unwrap();
    std::fs::remove_file(&remote).unwrap();
    let up = ssh.upload(&u, &local, &remote, &|_| {}, None).unwrap();
    assert_eq!(
        (up.via, up.resumed_from, up.sent),
        (Transfer::Chunked, 0, up.total),
        "{up:?}"
    );
    assert_same(&remote, &local);

    // A part as rsync leaves one when its link is cut (a prefix, written in place): resumed.
    let bytes = std::fs::read(&local).unwrap();
    std::fs::write(&part, &bytes[..(3 << 19)]).unwrap();
    std::fs::remove_file(&remote).unwrap();
    let up = ssh.upload(&u, &local, &remote, &|_| {}, None).unwrap();
    assert_eq!(
        (up.via, up.resumed_from),
        (Transfer::Chunked, 3 << 19),
        "{up:?}"
    );
    assert_same(&remote, &local);
}

#[test]
fn auto_takes_rsync_when_both_ends_have_it() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = TestFleet::start(dir.path(), &["reef-01"]);
    let ssh = ssh(&fleet, Transfer::Auto);
    let u = unit(&fleet, "reef-01");
    let local = payload(dir.path(), 3 << 20);
    // A folder the unit does not have yet.
    let remote = u.remote("/opt/trident/incoming/new/pkg.tar.zst");
    let seen = RefCell::new(Vec::new());
    let up = ssh
        .upload(&u, &local, &remote, &|n| seen.borrow_mut().push(n), None)
        .unwrap();
    assert_eq!(up.via, Transfer::Rsync, "{up:?}");
    assert_eq!((up.resumed_from, up.sent, up.total), (0, 3 << 20, 3 << 20));
    assert_same(&remote, &local);
    let seen = seen.into_inner();
    assert_eq!(seen.first(), Some(&0), "{seen:?}");
    assert_eq!(seen.last(), Some(&(3 << 20)), "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");

    // Forced, the same; and again over a finished file (no part): sent whole.
    let up = Ssh {
        transfer: Transfer::Rsync,
        ..ssh.clone()
    }
    .upload(&u, &local, &remote, &|_| {}, None)
    .unwrap();
    assert_eq!(
        (up.via, up.resumed_from, up.sent),
        (Transfer::Rsync, 0, 3 << 20)
    );
    assert_same(&remote, &local);
}

#[test]
fn rsync_resumes_a_part_left_by_a_dropped_chunked_upload() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = TestFleet::start(dir.path(), &["reef-01"]);
    let ssh = ssh(&fleet, Transfer::Auto);
    let u = unit(&fleet, "reef-01");
    let local = payload(dir.path(), 3 << 20);
    let remote = u.remote("/opt/trident/incoming/pkg.tar.zst");

    // `stop_after` takes the chunked copy even under Auto.
    let kept = drop_upload(&ssh, &u, &local, &remote, 1 << 20);
    let seen = RefCell::new(Vec::new());
    let up = ssh
        .upload(&u, &local, &remote, &|n| seen.borrow_mut().push(n), None)
        .unwrap();
    assert_eq!(up.via, Transfer::Rsync, "{up:?}");
    assert_eq!(up.resumed_from, kept, "{up:?}");
    assert_eq!(up.sent + up.resumed_from, up.total, "{up:?}");
    assert_same(&remote, &local);
    let seen = seen.into_inner();
    assert_eq!(seen.first(), Some(&kept), "{seen:?}");
    assert_eq!(seen.last(), Some(&(3 << 20)), "{seen:?}");

    // A whole part (the link was cut before the rename): renamed, nothing sent.
    std::fs::rename(&remote, part_of(&remote)).unwrap();
    let up = ssh.upload(&u, &local, &remote, &|_| {}, None).unwrap();
    assert_eq!(
        (up.via, up.resumed_from, up.sent),
        (Transfer::Rsync, 3 << 20, 0)
    );
    assert_same(&remote, &local);
}

#[test]
fn rsync_corrects_a_part_that_is_not_a_prefix_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = TestFleet::start(dir.path(), &["reef-01"]);
    let ssh = ssh(&fleet, Transfer::Rsync);
    let u = unit(&fleet, "reef-01");
    let local = payload(dir.path(), 3 << 20);
    let bytes = std::fs::read(&local).unwrap();
    let remote = u.remote("/opt/trident/incoming/pkg.tar.zst");
    let part = part_of(&remote);
    let flip = |at: usize| {
        let mut p = std::fs::read(&part).unwrap();
        for b in &mut p[at..at + 16] {
            *b = !*b;
        }
        std::fs::write(&part, p).unwrap();
    };

    // A shorter part corrupted on the unit: rsync's whole-file check fails after appending,
    // and its second pass corrects the part.
    let kept = drop_upload(&ssh, &u, &local, &remote, 1 << 20);
    flip(kept as usize / 2);
    let up = ssh.upload(&u, &local, &remote, &|_| {}, None).unwrap();
    assert_eq!((up.via, up.resumed_from), (Transfer::Rsync, 0), "{up:?}");
    assert!(up.sent >= up.total - kept, "{up:?}");
    assert_same(&remote, &local);

    // A part of the file's length but not the file: removed, sent again.
    std::fs::rename(&remote, &part).unwrap();
    flip(12_345);
    let up = ssh.upload(&u, &local, &remote, &|_| {}, None).unwrap();
    assert_eq!(
        (up.via, up.resumed_from, up.sent),
        (Transfer::Rsync, 0, 3 << 20)
    );
    assert_same(&remote, &local);

    // A part longer than the file cannot be a prefix of it: removed, sent again.
    std::fs::remove_file(&remote).unwrap();
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"trailing bytes");
    std::fs::write(&part, longer).unwrap();
    let up = ssh.upload(&u, &local, &remote, &|_| {}, None).unwrap();
    assert_eq!(
        (up.via, up.resumed_from, up.sent),
        (Transfer::Rsync, 0, 3 << 20)
    );
    assert_same(&remote, &local);
}

#[test]
fn without_a_usable_rsync_auto_copies_in_chunks_and_rsync_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = TestFleet::start(dir.path(), &["reef-01"]);
    let u = unit(&fleet, "reef-01");
    let local = payload(dir.path(), 1 << 20);
    let remote = u.remote("/opt/trident/incoming/pkg.tar.zst");

    // The unit's rsync is older than 3.1 (its `R/bin` comes first on the sessions' PATH).
    let fake = fleet.unit("reef-01").path("/bin/rsync");
    trident_e2e::install_script(
        &fake,
        "#!/bin/sh\necho 'rsync  version 3.0.9  protocol version 30'\nexit 1\n",
    );
    let up = ssh(&fleet, Transfer::Auto)
        .upload(&u, &local, &remote, &|_| {}, None)
        .unwrap();
    assert_eq!((up.via, up.sent), (Transfer::Chunked, 1 << 20));
    assert_same(&remote, &local);
    let e = ssh(&fleet, Transfer::Rsync)
        .upload(&u, &local, &remote, &|_| {}, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("reef-01: upload: the unit's rsync is too old"),
        "{e}"
    );
    std::fs::remove_file(&fake).unwrap();

    // An ssh config whose path rsync's `-e` cannot carry (a space): ssh itself takes it.
    let spaced = dir.path().join("with space");
    std::fs::create_dir_all(&spaced).unwrap();
    std::fs::copy(fleet.ssh_config(), spaced.join("config")).unwrap();
    let spaced = |transfer| Ssh {
        config: Some(spaced.join("config")),
        transfer,
        shared: None,
    };
    std::fs::remove_file(&remote).unwrap();
    let up = spaced(Transfer::Auto)
        .upload(&u, &local, &remote, &|_| {}, None)
        .unwrap();
    assert_eq!(up.via, Transfer::Chunked);
    assert_same(&remote, &local);
    let e = spaced(Transfer::Rsync)
        .upload(&u, &local, &remote, &|_| {}, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot be passed to rsync"), "{e}");
}

#[test]
fn a_failing_rsync_is_reported_and_its_part_kept() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = TestFleet::start(dir.path(), &["reef-01"]);
    let u = unit(&fleet, "reef-01");
    let local = payload(dir.path(), 1 << 20);
    let remote = u.remote("/opt/trident/incoming/pkg.tar.zst");
    let ssh = ssh(&fleet, Transfer::Auto);
    let kept = drop_upload(&ssh, &u, &local, &remote, 1 << 19);

    // The unit's rsync answers `--version` but dies as a server.
    trident_e2e::install_script(
        &fleet.unit("reef-01").path("/bin/rsync"),
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'rsync  version 3.2.7  protocol version 31'; exit 0; fi\necho 'disk on fire' >&2\nexit 1\n",
    );
    let e = ssh
        .upload(&u, &local, &remote, &|_| {}, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("reef-01: upload: rsync failed (")
            && e.ends_with("): disk on fire; the next push resumes"),
        "{e}"
    );
    assert_eq!(std::fs::metadata(part_of(&remote)).unwrap().len(), kept);
    assert!(!Path::new(&remote).exists());
}

#[test]
fn facts_come_back_in_one_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = TestFleet::start(dir.path(), &["reef-01"]);
    let ssh = Ssh {
        config: Some(fleet.ssh_config()),
        ..Default::default()
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

#[test]
fn shared_connections_carry_scripts_and_uploads_and_survive_a_restarted_unit() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = TestFleet::start(&dir.path().join("fleet"), &["reef-01"]);
    let shared = ssh(&fleet, Transfer::Auto).share_connections().unwrap();
    let u = unit(&fleet, "reef-01");
    let sockets = |s: &Ssh| {
        let dir = s.options().iter().find_map(|o| {
            o.strip_prefix("ControlPath=")
                .map(|p| PathBuf::from(p.trim_end_matches("/%C")))
        });
        std::fs::read_dir(dir.unwrap()).map_or(0, |d| d.count())
    };
    for i in 0..5 {
        let out = shared
            .check(&u, "echo", "echo \"$1\"", &[&i.to_string()])
            .unwrap();
        assert_eq!(out.trim(), i.to_string());
    }
    assert_eq!(sockets(&shared), 1, "one master for the unit");
    let local = payload(dir.path(), 300_000);
    let remote = u.remote("/opt/trident/incoming/p.bin");
    let up = shared.upload(&u, &local, &remote, &|_| {}, None).unwrap();
    assert_eq!(up.via, Transfer::Rsync);
    assert_eq!(
        std::fs::read(fleet.unit("reef-01").path("/opt/trident/incoming/p.bin")).unwrap(),
        std::fs::read(&local).unwrap()
    );

    // The unit goes away and comes back: the dead master is not reused.
    fleet.stop_unit("reef-01");
    let e = shared.check(&u, "echo", "true", &[]).unwrap_err();
    assert!(e.is_unreachable(), "{e}");
    fleet.start_unit("reef-01");
    assert_eq!(
        shared.check(&u, "echo", "echo back", &[]).unwrap().trim(),
        "back"
    );
}
