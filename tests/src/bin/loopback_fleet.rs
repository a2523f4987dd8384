//! `loopback-fleet DIR INVENTORY TRUSTED_KEY NAME…`: starts the test fleet (one real sshd per
//! unit on loopback, fake systemctl/nvpmodel, each unit under its own root in DIR), writes an
//! inventory for `trident deploy` to INVENTORY, prints `ready`, and keeps the fleet up until
//! its standard input closes. The demo deploys to it; nothing here is part of the product.
//!
//! With `TRIDENT_FLEET_CAMERA=URI` every unit's service plays that source (a file loops)
//! instead of the runtime's synthetic pattern, so the demo can see its units detecting.

use std::io::Read;
use std::path::PathBuf;

use trident_e2e::fleet::TestFleet;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: loopback-fleet DIR INVENTORY TRUSTED_KEY NAME…");
        std::process::exit(2);
    }
    let (dir, inventory, key) = (
        std::path::absolute(&args[0]).expect("a path"),
        PathBuf::from(&args[1]),
        std::path::absolute(&args[2]).expect("a path"),
    );
    let names: Vec<&str> = args[3..].iter().map(String::as_str).collect();
    let _ = std::fs::remove_dir_all(&dir);
    let fleet = TestFleet::start(&dir, &names);
    if let Ok(uri) = std::env::var("TRIDENT_FLEET_CAMERA") {
        for name in &names {
            fleet.unit(name).set_camera(&uri);
        }
    }
    let mut text = format!(
        "# Written by loopback-fleet: {n} fake Nano units, each an sshd on 127.0.0.1.\n\
         trusted_key: {key}\nwaves: {{canary: 1, max_parallel: 4}}\nhealth: {{timeout_s: 60}}\n\
         ssh: {{config: {config}}}\nunits:\n",
        n = names.len(),
        key = key.display(),
        config = fleet.ssh_config().display()
    );
    for (i, name) in names.iter().enumerate() {
        let u = fleet.unit(name);
        text.push_str(&format!(
            "  - name: {name}\n    host: {name}\n    tags: [{tag}]\n    root: {root}\n    health_addr: 127.0.0.1:{port}\n",
            tag = if i == 0 { "canary" } else { "reef" },
            root = u.root.display(),
            port = u.health_port
        ));
    }
    std::fs::write(&inventory, text).expect("write the inventory");
    println!("ready");
    // Up until the caller closes our stdin (or dies); the fleet's drop stops every sshd and
    // everything its sessions started.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(fleet);
}
