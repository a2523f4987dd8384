//! The device facts of a benchmark report, and the memory figures sampled while it runs.
//!
//! Facts are read from files below a system root (`/` on a unit, a fake tree in tests) so that
//! the same code describes a Jetson, a PC and a test fixture. A machine that does not tell
//! something leaves it `None`: a report from a half-known machine is still worth keeping, so
//! nothing here fails or panics.

use std::path::Path;

use trident_core::bench::{CpuInfo, DeviceInfo};
use trident_package::facts::installed_package_version;

/// Facts about this machine, read below `root` (`/` on a unit; a fake tree in tests). `gstreamer`
/// is the runtime's GStreamer version when the caller knows it (`gstreamer::version()`);
/// otherwise the installed `libgstreamer1.0-0` package version from dpkg is used.
pub fn probe(root: &Path, gstreamer: Option<String>) -> DeviceInfo {
    let facts = trident_package::facts::probe(root);
    // `gstreamer::version_string()` says `GStreamer 1.14.5`; the report wants the number only,
    // as dpkg gives it.
    let gstreamer = gstreamer
        .map(|v| v.trim().trim_start_matches("GStreamer").trim().to_string())
        .filter(|v| !v.is_empty())
        .or_else(|| installed_package_version(root, &["libgstreamer1.0-0"]));
    let (power_mode_id, power_mode) = power_mode(root);
    let (gpu_mhz, gpu_max_mhz) = gpu_clocks(root);
    DeviceInfo {
        hostname: read_trimmed(root, "proc/sys/kernel/hostname")
            .or_else(|| read_trimmed(root, "etc/hostname"))
            .unwrap_or_else(|| "unknown".into()),
        board: board(root),
        arch: std::env::consts::ARCH.into(),
        kernel: read_trimmed(root, "proc/sys/kernel/osrelease"),
        l4t: facts.l4t,
        jetpack: facts.jetpack,
        tensorrt: facts.tensorrt,
        gstreamer,
        glibc: facts.glibc,
        power_mode,
        power_mode_id,
        cpu: cpu(root),
        gpu_mhz,
        gpu_max_mhz,
        memory_total_mib: read_trimmed(root, "proc/meminfo")
            .and_then(|t| kib_field(&t, "MemTotal").map(|k| k / 1024.0)),
    }
}

/// Peak resident set size of this process (`VmHWM` in `/proc/self/status`), MiB. Always this
/// process's own: the figure belongs to the run, not to a system root.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    kib_field(&status, "VmHWM").map(|k| k / 1024.0)
}

/// Resets the peak RSS counter to the present RSS (writes `5` to `/proc/self/clear_refs`, Linux
/// ≥ 4.0), so that each ladder level gets its own peak; false when not allowed or available
/// (older kernels, some sandboxes), and the peak is then the process's peak so far.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Memory in use on the whole machine (`MemTotal − MemAvailable` from `root`/proc/meminfo), MiB.
/// On a Jetson the GPU shares this memory, so this is where its allocations show.
pub fn memory_in_use_mib(root: &Path) -> Option<f64> {
    let text = read_trimmed(root, "proc/meminfo")?;
    let total = kib_field(&text, "MemTotal")?;
    let available = kib_field(&text, "MemAvailable")?;
    Some((total - available).max(0.0) / 1024.0)
}

/// A file below `root` without surrounding whitespace and NULs (device-tree strings end in
/// one); `None` when missing, unreadable or empty.
fn read_trimmed(root: &Path, rel: &str) -> Option<String> {
    let bytes = std::fs::read(root.join(rel)).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!text.is_empty()).then(|| text.to_string())
}

/// The number in a file below `root`, divided by `per` (kHz or Hz → MHz).
fn scaled(root: &Path, rel: &str, per: f64) -> Option<f64> {
    read_trimmed(root, rel)?
        .parse::<f64>()
        .ok()
        .map(|v| v / per)
}

/// `MemTotal:  4059272 kB` (meminfo) or `VmHWM:  1676 kB` (status) → the number of KiB.
fn kib_field(text: &str, key: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let value = l.strip_prefix(key)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// The board's name: the device tree's model on ARM boards, else the DMI vendor and product of
/// a PC, leaving out the placeholders firmware vendors ship unfilled.
fn board(root: &Path) -> Option<String> {
    if let Some(model) = read_trimmed(root, "proc/device-tree/model")
        .or_else(|| read_trimmed(root, "sys/firmware/devicetree/base/model"))
    {
        return Some(model);
    }
    let dmi = |file: &str| {
        read_trimmed(root, &format!("sys/class/dmi/id/{file}")).filter(|v| !is_placeholder(v))
    };
    match (dmi("sys_vendor"), dmi("product_name")) {
        (Some(v), Some(p)) if p.to_lowercase().starts_with(&v.to_lowercase()) => Some(p),
        (Some(v), Some(p)) => Some(format!("{v} {p}")),
        (v, p) => p.or(v),
    }
}

/// DMI values that name nothing.
fn is_placeholder(value: &str) -> bool {
    const PLACEHOLDERS: [&str; 11] = [
        "to be filled by o.e.m.",
        "system product name",
        "system manufacturer",
        "default string",
        "not applicable",
        "not specified",
        "o.e.m.",
        "oem",
        "none",
        "unknown",
        "type1productconfigid",
    ];
    PLACEHOLDERS.contains(&value.trim().to_lowercase().as_str())
}

/// nvpmodel's present mode (number, name). The number is in the status file nvpmodel writes on
/// every change and at boot; the name in the configuration's mode table. Neither file: not a
/// Jetson, or nvpmodel never ran, and the mode is unknown (the configuration's default is not
/// assumed: nothing says it was applied).
fn power_mode(root: &Path) -> (Option<u32>, Option<String>) {
    let Some(id) = read_trimmed(root, "var/lib/nvpmodel/status").and_then(|t| parse_pmode(&t))
    else {
        return (None, None);
    };
    let name = read_trimmed(root, "etc/nvpmodel.conf").and_then(|t| power_model_name(&t, id));
    (Some(id), name)
}

/// `pmode:0000 fmode:quiet` (JetPack 4.x), `pmode:0002` → the mode number.
fn parse_pmode(status: &str) -> Option<u32> {
    let rest = &status[status.find("pmode")? + "pmode".len()..];
    let rest = rest.trim_start().strip_prefix([':', '='])?.trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The name of mode `id` in nvpmodel.conf's table: `< POWER_MODEL ID=1 NAME=5W >`.
fn power_model_name(conf: &str, id: u32) -> Option<String> {
    conf.lines().find_map(|line| {
        let body = line.trim().strip_prefix('<')?.strip_suffix('>')?;
        let mut words = body.split_whitespace();
        if words.next()? != "POWER_MODEL" {
            return None;
        }
        let (mut this_id, mut name) = (None, None);
        for w in words {
            if let Some(v) = w.strip_prefix("ID=") {
                this_id = v.parse::<u32>().ok();
            } else if let Some(v) = w.strip_prefix("NAME=") {
                name = Some(v.trim_matches('"').to_string());
            }
        }
        name.filter(|n| this_id == Some(id) && !n.is_empty())
    })
}

/// The CPUs online, their clocks and governor.
fn cpu(root: &Path) -> CpuInfo {
    let ids = read_trimmed(root, "sys/devices/system/cpu/online")
        .and_then(|t| parse_cpu_list(&t))
        .unwrap_or_else(|| {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            (0..u32::try_from(n).unwrap_or(1)).collect()
        });
    let file = |cpu: u32, name: &str| format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/{name}");
    let mhz = |cpu: u32, name: &str| scaled(root, &file(cpu, name), 1e3);
    CpuInfo {
        model: read_trimmed(root, "proc/cpuinfo").and_then(|t| cpu_model(&t)),
        online: u32::try_from(ids.len()).unwrap_or(u32::MAX),
        mhz: ids
            .iter()
            .filter_map(|&c| mhz(c, "scaling_cur_freq"))
            .collect(),
        max_mhz: ids
            .iter()
            .filter_map(|&c| mhz(c, "cpuinfo_max_freq"))
            .reduce(f64::max),
        // CPU 0 on every board this runs on; the first online one should it ever be offline.
        governor: ids
            .first()
            .and_then(|&c| read_trimmed(root, &file(c, "scaling_governor"))),
    }
}

/// sysfs CPU lists: `0-3`, `0,2-3`, `0` → the CPU numbers; `None` when malformed.
fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut ids = Vec::new();
    for part in text.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b) = (a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?);
        // A corrupt range must not allocate billions of entries.
        if b < a || b - a > 65_535 {
            return None;
        }
        ids.extend(a..=b);
    }
    Some(ids)
}

/// The CPU's name in `/proc/cpuinfo`: `model name` (x86, and arm64 kernels such as L4T's 4.9),
/// or `Processor` (older ARM kernels). Lower-case `processor` is the CPU's number, not a name.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        let value = value.trim();
        (matches!(key.trim(), "model name" | "Processor") && !value.is_empty())
            .then(|| value.to_string())
    })
}

/// GPU clock now and its maximum (MHz) from devfreq: the Nano's GPU node, else the first
/// devfreq device named like a GPU (`57000000.gpu`, `17000000.gv11b` on Xavier, `…ga10b` on
/// Orin, `…gp10b` on TX2).
fn gpu_clocks(root: &Path) -> (Option<f64>, Option<f64>) {
    const GPU_CHIPS: [&str; 5] = ["gk20a", "gm20b", "gp10b", "gv11b", "ga10b"];
    let mut dirs = vec!["sys/devices/gpu.0/devfreq/57000000.gpu".to_string()];
    if let Ok(entries) = std::fs::read_dir(root.join("sys/class/devfreq")) {
        let mut names: Vec<String> = entries
            .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.contains("gpu") || GPU_CHIPS.iter().any(|g| n.ends_with(g)))
            .collect();
        names.sort();
        dirs.extend(names.into_iter().map(|n| format!("sys/class/devfreq/{n}")));
    }
    let mhz = |dir: &str, file: &str| scaled(root, &format!("{dir}/{file}"), 1e6);
    dirs.iter()
        .map(|d| (mhz(d, "cur_freq"), mhz(d, "max_freq")))
        .find(|(cur, max)| cur.is_some() || max.is_some())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    /// Writes files below a root: `tree!(root, "proc/meminfo" => "MemTotal: …", …)`.
    macro_rules! tree {
        ($root:expr, $($rel:expr => $content:expr),* $(,)?) => {
            $(put($root, &$rel, $content);)*
        };
    }

    const DPKG: &str = "\
Package: libc6
Status: install ok installed
Version: 2.27-3ubuntu1.6

Package: libnvinfer8
Status: install ok installed
Version: 8.2.1-1+cuda10.2

Package: libgstreamer1.0-0
Status: install ok installed
Version: 1.14.5-0ubuntu1~18.04.2
";

    const RELEASE: &str = "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, \
        EABI: aarch64, DATE: Sat Feb 19 17:05:08 UTC 2022\n";
    const NVPMODEL_CONF: &str = "# Nano\n< PM_CONFIG DEFAULT=0 >\n< POWER_MODEL ID=0 NAME=MAXN >\n\
        CPU_ONLINE CORE_0 1\n< POWER_MODEL ID=1 NAME=5W >\nCPU_ONLINE CORE_2 0\n";

    /// A Jetson Nano (JetPack 4.6.1) in MAXN with four CPUs at 1479 MHz.
    fn nano(root: &Path) {
        tree!(root,
            "proc/device-tree/model" => "NVIDIA Jetson Nano Developer Kit\0",
            "proc/sys/kernel/hostname" => "nano-07\n",
            "proc/sys/kernel/osrelease" => "4.9.253-tegra\n",
            "etc/nv_tegra_release" => RELEASE,
            "var/lib/dpkg/status" => DPKG,
            "var/lib/nvpmodel/status" => "pmode:0000 fmode:quiet\n",
            "etc/nvpmodel.conf" => NVPMODEL_CONF,
            "proc/cpuinfo" => "processor\t: 0\nmodel name\t: ARMv8 Processor rev 1 (v8l)\n",
            "sys/devices/system/cpu/online" => "0-3\n",
            "sys/devices/gpu.0/devfreq/57000000.gpu/cur_freq" => "921600000\n",
            "sys/devices/gpu.0/devfreq/57000000.gpu/max_freq" => "921600000\n",
            "proc/meminfo" => "MemTotal:        4059272 kB\nMemAvailable:    2011016 kB\n",
        );
        for c in 0..4 {
            let f = |name: &str| format!("sys/devices/system/cpu/cpu{c}/cpufreq/{name}");
            tree!(root,
                f("scaling_cur_freq") => "1479000\n",
                f("cpuinfo_max_freq") => "1479000\n",
                f("scaling_governor") => "schedutil\n",
            );
        }
    }

    #[test]
    fn a_nano_tells_every_fact() {
        let dir = tempfile::tempdir().unwrap();
        nano(dir.path());
        let d = probe(dir.path(), None);
        assert_eq!(d.hostname, "nano-07");
        assert_eq!(d.board.as_deref(), Some("NVIDIA Jetson Nano Developer Kit"));
        assert_eq!(d.arch, std::env::consts::ARCH);
        assert_eq!(d.kernel.as_deref(), Some("4.9.253-tegra"));
        assert_eq!(
            (d.l4t.as_deref(), d.jetpack.as_deref()),
            (Some("32.7.1"), Some("4.6.1"))
        );
        assert_eq!(d.tensorrt.as_deref(), Some("8.2.1"));
        assert_eq!(d.glibc.as_deref(), Some("2.27"));
        assert_eq!(
            d.gstreamer.as_deref(),
            Some("1.14.5"),
            "dpkg's, upstream part"
        );
        assert_eq!(
            (d.power_mode.as_deref(), d.power_mode_id),
            (Some("MAXN"), Some(0))
        );
        assert_eq!(d.cpu.model.as_deref(), Some("ARMv8 Processor rev 1 (v8l)"));
        assert_eq!(d.cpu.online, 4);
        assert_eq!(d.cpu.mhz, vec![1479.0; 4]);
        assert_eq!(d.cpu.max_mhz, Some(1479.0));
        assert_eq!(d.cpu.governor.as_deref(), Some("schedutil"));
        assert_eq!((d.gpu_mhz, d.gpu_max_mhz), (Some(921.6), Some(921.6)));
        assert!((d.memory_total_mib.unwrap() - 3964.13).abs() < 0.01);
        let used = memory_in_use_mib(dir.path()).unwrap();
        assert!((used - (4_059_272.0 - 2_011_016.0) / 1024.0).abs() < 1e-9);

        // The runtime's own GStreamer wins over dpkg's, in either spelling.
        let d = probe(dir.path(), Some("GStreamer 1.14.6".into()));
        assert_eq!(d.gstreamer.as_deref(), Some("1.14.6"));
        // In 5W mode, with CPUs 2 and 3 off.
        tree!(dir.path(),
            "var/lib/nvpmodel/status" => "pmode:0001 fmode:quiet\n",
            "sys/devices/system/cpu/online" => "0-1\n",
        );
        let d = probe(dir.path(), None);
        assert_eq!(
            (d.power_mode.as_deref(), d.power_mode_id),
            (Some("5W"), Some(1))
        );
        assert_eq!((d.cpu.online, d.cpu.mhz.len()), (2, 2));
    }

    #[test]
    fn a_pc_is_named_by_dmi_and_has_no_jetson_facts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        tree!(root,
            "etc/hostname" => "build-box\n",
            "sys/class/dmi/id/sys_vendor" => "LENOVO\n",
            "sys/class/dmi/id/product_name" => "20XWCTO1WW\n",
            "proc/cpuinfo" => "processor\t: 0\nmodel name\t: Intel(R) Core(TM) i7-1165G7\n",
            "sys/devices/system/cpu/online" => "0-7\n",
            "proc/meminfo" => "MemTotal:       16000000 kB\nMemAvailable:   12000000 kB\n",
        );
        let d = probe(root, Some("1.22.0".into()));
        assert_eq!(d.hostname, "build-box", "etc/hostname without /proc");
        assert_eq!(d.board.as_deref(), Some("LENOVO 20XWCTO1WW"));
        assert_eq!(d.cpu.model.as_deref(), Some("Intel(R) Core(TM) i7-1165G7"));
        assert_eq!((d.cpu.online, d.cpu.mhz.len(), d.cpu.max_mhz), (8, 0, None));
        assert_eq!(d.gstreamer.as_deref(), Some("1.22.0"));
        assert_eq!((d.l4t, d.jetpack, d.tensorrt), (None, None, None));
        assert_eq!((d.power_mode, d.power_mode_id), (None, None));
        assert_eq!((d.gpu_mhz, d.gpu_max_mhz), (None, None));

        // Unfilled firmware strings name nothing; a real one alone still does.
        tree!(root,
            "sys/class/dmi/id/sys_vendor" => "To Be Filled By O.E.M.\n",
            "sys/class/dmi/id/product_name" => "System Product Name\n",
        );
        assert_eq!(board(root), None);
        tree!(root, "sys/class/dmi/id/product_name" => "B450 AORUS M\n");
        assert_eq!(board(root).as_deref(), Some("B450 AORUS M"));
    }

    #[test]
    fn an_empty_root_gives_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let d = probe(dir.path(), None);
        assert_eq!(d.hostname, "unknown");
        assert_eq!(
            (d.board, d.kernel, d.gstreamer, d.glibc),
            (None, None, None, None)
        );
        assert_eq!((d.power_mode, d.power_mode_id), (None, None));
        assert!(d.cpu.online >= 1, "this machine's parallelism");
        assert_eq!(
            (d.cpu.model, d.cpu.max_mhz, d.cpu.governor),
            (None, None, None)
        );
        assert!(d.cpu.mhz.is_empty());
        assert_eq!((d.gpu_mhz, d.memory_total_mib), (None, None));
        assert_eq!(memory_in_use_mib(dir.path()), None);
    }

    #[test]
    fn a_later_jetsons_gpu_is_found_among_devfreq_devices() {
        let dir = tempfile::tempdir().unwrap();
        tree!(dir.path(),
            "sys/class/devfreq/15340000.vic/cur_freq" => "115200000\n",
            "sys/class/devfreq/17000000.gv11b/cur_freq" => "1377000000\n",
            "sys/class/devfreq/17000000.gv11b/max_freq" => "1377000000\n",
        );
        assert_eq!(gpu_clocks(dir.path()), (Some(1377.0), Some(1377.0)));
    }

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0-3\n"), Some(vec![0, 1, 2, 3]));
        assert_eq!(parse_cpu_list("0,2-3"), Some(vec![0, 2, 3]));
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("0-4294967295"), None);
    }

    #[test]
    fn nvpmodel_files_parse() {
        assert_eq!(parse_pmode("pmode:0000 fmode:quiet\n"), Some(0));
        assert_eq!(parse_pmode("pmode:0002"), Some(2));
        assert_eq!(parse_pmode("fmode:cool\npmode: 7\n"), Some(7));
        assert_eq!(
            (parse_pmode("fmode:quiet"), parse_pmode("pmode:")),
            (None, None)
        );
        let conf = "# < POWER_MODEL ID=9 NAME=COMMENTED >\n<  POWER_MODEL  ID=0 NAME=MAXN >\n\
                    < POWER_MODEL ID=1 NAME=5W >\n\
                    < POWER_MODEL ID=2 NAME=MAXN_SUPER PRIORITY=1 >\n";
        assert_eq!(power_model_name(conf, 0).as_deref(), Some("MAXN"));
        assert_eq!(power_model_name(conf, 1).as_deref(), Some("5W"));
        assert_eq!(power_model_name(conf, 2).as_deref(), Some("MAXN_SUPER"));
        assert_eq!(
            (power_model_name(conf, 9), power_model_name(conf, 3)),
            (None, None)
        );
    }

    #[test]
    fn arm_cpuinfo_without_model_name_uses_processor() {
        let old = "Processor\t: AArch64 Processor rev 4 (aarch64)\nprocessor\t: 0\n";
        assert_eq!(
            cpu_model(old).as_deref(),
            Some("AArch64 Processor rev 4 (aarch64)")
        );
        assert_eq!(cpu_model("processor\t: 0\nBogoMIPS\t: 38.40\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn peak_rss_is_read_and_resets_once_memory_is_freed() {
        let before = peak_rss_mib().expect("VmHWM");
        assert!(before > 0.0);
        const SIZE: usize = 64 << 20;
        // Written page by page (not zeroed by calloc, which maps untouched pages).
        let block = std::hint::black_box(vec![1u8; SIZE]);
        assert!(block.iter().step_by(4096).all(|&b| b == 1));
        let peak = peak_rss_mib().unwrap();
        assert!(peak >= before.max(60.0), "{before} → {peak}");
        drop(block);
        if reset_peak_rss() {
            let after = peak_rss_mib().unwrap();
            assert!(after < peak, "peak {peak} MiB, after reset {after} MiB");
        }
    }
}
