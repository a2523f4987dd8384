//! Power sources against fake sysfs trees and log files, and the model estimate.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::*;

/// A fresh scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("trident-governor-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, relative: &str, text: &str) -> PathBuf {
        let path = self.0.join(relative.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn nano_profile() -> Profile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/profiles/nano-10w.yaml");
    Profile::load(&path).unwrap()
}

#[test]
fn ina3221_reads_milliwatts_at_the_nano_path() {
    let root = Scratch::new("ina");
    root.write(NANO_INA3221_PATH, "4321\n");
    let mut s = Ina3221::detect(&root.0, Path::new(NANO_INA3221_PATH)).unwrap();
    assert_eq!(s.name(), "ina3221");
    assert!((s.read(1.0).unwrap() - 4.321).abs() < 1e-12);
    root.write(NANO_INA3221_PATH, "garbage");
    assert!(s.read(2.0).unwrap_err().to_string().contains("garbage"));
    std::fs::remove_file(under(&root.0, Path::new(NANO_INA3221_PATH))).unwrap();
    assert!(s.read(3.0).is_err());
}

#[test]
fn ina3221_found_at_another_bus_address() {
    let root = Scratch::new("ina-other");
    let other = "/sys/bus/i2c/drivers/ina3221x/1-0040/iio:device1/in_power0_input";
    root.write(other, "2500");
    let s = Ina3221::detect(&root.0, Path::new(NANO_INA3221_PATH)).unwrap();
    assert_eq!(s.path(), under(&root.0, Path::new(other)));
    let empty = Scratch::new("ina-none");
    assert!(Ina3221::detect(&empty.0, Path::new(NANO_INA3221_PATH)).is_err());
}

#[test]
fn tegrastats_lines() {
    let jp4 = "RAM 1923/3964MB (lfb 4x4MB) CPU [5%@1224,3%@1224,off,off] EMC_FREQ 0%@1600 \
               GR3D_FREQ 0%@76 APE 25 PLL@22C CPU@25C PMIC@100C GPU@23.5C AO@32C \
               thermal@24.25C POM_5V_IN 2700/2650 POM_5V_GPU 41/41 POM_5V_CPU 374/374";
    assert_eq!(parse_rail(jp4, "POM_5V_IN"), Some(2.7));
    assert_eq!(parse_rail(jp4, "POM_5V_GPU"), Some(0.041));
    let jp5 = "RAM 2000/7000MB CPU [1%@729] VDD_IN 5123mW/5000mW VDD_CPU_GPU_CV 800mW/780mW";
    assert_eq!(parse_rail(jp5, "VDD_IN"), Some(5.123));
    assert_eq!(parse_rail(jp4, "VDD_IN"), None);
    assert_eq!(parse_rail("POM_5V_IN", "POM_5V_IN"), None);
    assert_eq!(parse_rail("POM_5V_IN x/1", "POM_5V_IN"), None);
}

#[test]
fn tegrastats_log_is_tailed_and_goes_stale() {
    let dir = Scratch::new("tegra");
    let log = dir.write("tegrastats.log", "RAM 1/2MB POM_5V_IN 9999/9999\n");
    let mut s = Tegrastats::from_logfile(log.clone(), "POM_5V_IN", 5.0, 0.0).unwrap();
    // Lines written before it opened are not used.
    assert!(s.read(0.5).is_err());
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    write!(
        f,
        "RAM 1/2MB POM_5V_IN 1750/1628\nRAM 1/2MB POM_5V_IN 3000/2000\nRAM 1/2MB POM_5V"
    )
    .unwrap();
    assert_eq!(s.read(1.0).unwrap(), 3.0);
    // The partial line completes later.
    writeln!(f, "_IN 4200/2500").unwrap();
    assert_eq!(s.read(2.0).unwrap(), 4.2);
    // No new line: the last value holds for 5 s, then it is an error.
    assert_eq!(s.read(6.9).unwrap(), 4.2);
    let err = s.read(7.5).unwrap_err().to_string();
    assert!(err.contains("no POM_5V_IN reading"), "{err}");
    // Truncated (rotated) log: read from its start again.
    std::fs::write(&log, "RAM 1/2MB POM_5V_IN 1000/1000\n").unwrap();
    assert_eq!(s.read(8.0).unwrap(), 1.0);
}

#[test]
fn rapl_counts_energy_across_wraparound() {
    let root = Scratch::new("rapl");
    root.write(
        "/sys/class/powercap/intel-rapl:0/max_energy_range_uj",
        "10000000\n",
    );
    let energy = root.write("/sys/class/powercap/intel-rapl:0/energy_uj", "7000000\n");
    let mut s = Rapl::open(under(&root.0, Path::new(RAPL_DIR)), 10.0).unwrap();
    std::fs::write(&energy, "9000000").unwrap();
    assert!((s.read(11.0).unwrap() - 2.0).abs() < 1e-12);
    // 9 J → wraps at 10 J → 1.5 J: 2.5 J in 0.5 s.
    std::fs::write(&energy, "1500000").unwrap();
    assert!((s.read(11.5).unwrap() - 5.0).abs() < 1e-12);
    // No time passed: the last value.
    assert!((s.read(11.5).unwrap() - 5.0).abs() < 1e-12);
    assert_eq!(counter_delta(100, 250, 1000), 150);
    assert_eq!(counter_delta(900, 50, 1000), 150);
}

#[test]
fn estimate_is_idle_plus_active_times_utilisation() {
    let profile = nano_profile();
    let mut m = PowerModel::from_profile(&profile, 0.0);
    assert_eq!(m.read(1.0).unwrap(), 1.7);
    m.add_busy("balanced", 0.33);
    m.add_busy("high_recall", 0.165);
    m.add_busy("unknown", 0.2);
    assert!((m.read(2.0).unwrap() - (1.7 + 5.1 * 0.495)).abs() < 1e-9);
    // 1.5 s of work reported for a 1 s interval: 1 s now, 0.5 s carried to the next interval.
    m.add_busy("balanced", 1.5);
    assert!((m.read(3.0).unwrap() - (1.7 + 5.1)).abs() < 1e-9);
    assert!((m.read(4.0).unwrap() - (1.7 + 5.1 * 0.5)).abs() < 1e-9);
    assert_eq!(m.read(5.0).unwrap(), 1.7);
}

#[test]
fn auto_detection_order() {
    let mut config = nano_profile().power;
    config.tegrastats.binary = "/usr/bin/tegrastats".into();
    let root = Scratch::new("detect");
    root.write(
        "/sys/class/powercap/intel-rapl:0/max_energy_range_uj",
        "10000000",
    );
    root.write("/sys/class/powercap/intel-rapl:0/energy_uj", "5");
    let (s, skipped) = open_source(&config, SourceChoice::Auto, &root.0, 0.0).unwrap();
    assert_eq!(s.unwrap().name(), "rapl");
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped[0].starts_with("ina3221: ") && skipped[1].starts_with("tegrastats: "));
    root.write(NANO_INA3221_PATH, "3000");
    let (s, _) = open_source(&config, SourceChoice::Auto, &root.0, 0.0).unwrap();
    assert_eq!(s.unwrap().name(), "ina3221");
    // Overrides: the estimate needs nothing; a named sensor that is missing is an error.
    let (s, _) = open_source(&config, SourceChoice::Estimate, &root.0, 0.0).unwrap();
    assert!(s.is_none());
    let empty = Scratch::new("detect-none");
    let (s, skipped) = open_source(&config, SourceChoice::Auto, &empty.0, 0.0).unwrap();
    assert!(s.is_none() && skipped.len() == 3);
    assert!(open_source(&config, SourceChoice::Ina3221, &empty.0, 0.0).is_err());
}

#[test]
fn tegrastats_is_started_when_only_it_exists() {
    let root = Scratch::new("tegra-spawn");
    let script = root.write(
        "/usr/bin/tegrastats",
        "#!/bin/sh\n# fake: --interval MS --logfile FILE\n\
         while true; do echo \"RAM 1/2MB POM_5V_IN 2700/2650 POM_5V_GPU 41/41\" >> \"$4\"; \
         sleep 0.1; done\n",
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut config = nano_profile().power;
    config.tegrastats.logfile = Some(root.0.join("tegrastats.log"));
    config.tegrastats.interval_ms = 100;
    let (s, skipped) = open_source(&config, SourceChoice::Auto, &root.0, 0.0).unwrap();
    let mut s = s.unwrap();
    assert_eq!((s.name(), skipped.len()), ("tegrastats", 1));
    assert_eq!(s.read(0.1).unwrap(), 2.7);
}
