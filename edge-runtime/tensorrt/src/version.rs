//! TensorRT version numbers: decoding the integer TensorRT reports, reading trtexec's banner, and the
//! version thresholds at which trtexec's flags changed.

use std::fmt;
use std::str::FromStr;

/// A TensorRT version, e.g. 8.2.1 (JetPack 4.6) or 10.3.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrtVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl TrtVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        TrtVersion {
            major,
            minor,
            patch,
        }
    }

    /// Decodes `NV_TENSORRT_VERSION` / `getInferLibVersion()`: TensorRT 8 and 9 encode
    /// `major*1000 + minor*100 + patch` (8201 → 8.2.1), TensorRT 10 and later
    /// `major*10000 + minor*100 + patch` (100300 → 10.3.0). The two ranges do not overlap because
    /// the old scheme tops out below 10000 and the new one starts at 100000.
    pub fn from_encoded(n: u32) -> Option<Self> {
        if n >= 100_000 {
            Some(Self::new(n / 10_000, n / 100 % 100, n % 100))
        } else if (1_000..10_000).contains(&n) {
            Some(Self::new(n / 1_000, n / 100 % 10, n % 100))
        } else {
            None
        }
    }

    /// Reads the version from trtexec's banner,
    /// `&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # trtexec --help`, printed by every trtexec
    /// since TensorRT 7 (samples/common/logging.h appends `[TensorRT v<NV_TENSORRT_VERSION>]`).
    pub fn from_trtexec_banner(text: &str) -> Option<Self> {
        const MARK: &str = "[TensorRT v";
        let start = text.find(MARK)? + MARK.len();
        let digits: String = text[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if !text[start + digits.len()..].starts_with(']') {
            return None;
        }
        Self::from_encoded(digits.parse().ok()?)
    }

    /// trtexec's workspace flag for `mib` MiB, exactly as that version's
    /// samples/common/sampleOptions.cpp parses it:
    /// * < 8.4: `--workspace=N` (integer MiB; `--memPoolSize` does not exist yet);
    /// * 8.4 – 10.0: `--memPoolSize=workspace:N` (MiB; 10.0 multiplies a unit suffix into the
    ///   MiB value, so `NM` would ask for N TiB there and must not be used);
    /// * ≥ 10.1: `--memPoolSize=workspace:NM` (value in bytes after the unit suffix, divided by 1 MiB).
    pub fn workspace_flag(&self, mib: u64) -> String {
        if *self < Self::new(8, 4, 0) {
            format!("--workspace={mib}")
        } else if *self < Self::new(10, 1, 0) {
            format!("--memPoolSize=workspace:{mib}")
        } else {
            format!("--memPoolSize=workspace:{mib}M")
        }
    }

    /// trtexec's "build, then skip the inference benchmark" flag: `--buildOnly` before 8.6,
    /// `--skipInference` from 8.6 (where `--buildOnly` became a deprecated alias; 10.0 removed it).
    /// Skipping inference saves seconds and memory on a Nano; the engine is saved either way.
    pub fn skip_inference_flag(&self) -> &'static str {
        if *self < Self::new(8, 6, 0) {
            "--buildOnly"
        } else {
            "--skipInference"
        }
    }

    /// Whether builders accept a "also allow fp16 kernels" switch. TensorRT 11 removed weak typing
    /// (`--fp16`, `BuilderFlag::kFP16`); networks are strongly typed, so fp16 must come from the ONNX.
    pub fn has_fp16_flag(&self) -> bool {
        self.major < 11
    }
}

impl fmt::Display for TrtVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for TrtVersion {
    type Err = String;

    /// Parses "8.2.1" (a fourth component such as a build number is ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a TensorRT version like 8.2.1");
        let mut parts = s
            .trim()
            .split('.')
            .map(|p| p.parse::<u32>().map_err(|_| bad()));
        let major = parts.next().ok_or_else(bad)??;
        let minor = parts.next().ok_or_else(bad)??;
        let patch = parts.next().unwrap_or(Ok(0))?;
        Ok(Self::new(major, minor, patch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_both_encodings() {
        assert_eq!(
            TrtVersion::from_encoded(8201),
            Some(TrtVersion::new(8, 2, 1))
        );
        assert_eq!(
            TrtVersion::from_encoded(8601),
            Some(TrtVersion::new(8, 6, 1))
        );
        assert_eq!(
            TrtVersion::from_encoded(9300),
            Some(TrtVersion::new(9, 3, 0))
        );
        assert_eq!(
            TrtVersion::from_encoded(100300),
            Some(TrtVersion::new(10, 3, 0))
        );
        assert_eq!(
            TrtVersion::from_encoded(101303),
            Some(TrtVersion::new(10, 13, 3))
        );
        assert_eq!(TrtVersion::from_encoded(12), None);
        assert_eq!(TrtVersion::from_encoded(12345), None);
    }

    #[test]
    fn reads_banner() {
        let b = "&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # trtexec --help\n=== Model Options ===";
        assert_eq!(
            TrtVersion::from_trtexec_banner(b).unwrap().to_string(),
            "8.2.1"
        );
        let b = "&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # /usr/bin/trtexec --help";
        assert_eq!(
            TrtVersion::from_trtexec_banner(b).unwrap().to_string(),
            "10.3.0"
        );
        assert_eq!(TrtVersion::from_trtexec_banner("TensorRT v8201"), None);
        assert_eq!(TrtVersion::from_trtexec_banner("[TensorRT v82x1]"), None);
        assert_eq!(TrtVersion::from_trtexec_banner("[TensorRT v]"), None);
    }

    #[test]
    fn flags_follow_the_version() {
        let v = |s: &str| s.parse::<TrtVersion>().unwrap();
        assert_eq!(v("8.2.1").workspace_flag(1024), "--workspace=1024");
        assert_eq!(
            v("8.4.1").workspace_flag(1024),
            "--memPoolSize=workspace:1024"
        );
        assert_eq!(
            v("10.0.1").workspace_flag(512),
            "--memPoolSize=workspace:512"
        );
        assert_eq!(
            v("10.1.0").workspace_flag(512),
            "--memPoolSize=workspace:512M"
        );
        assert_eq!(
            v("10.3.0").workspace_flag(1024),
            "--memPoolSize=workspace:1024M"
        );
        assert_eq!(v("8.5.3").skip_inference_flag(), "--buildOnly");
        assert_eq!(v("8.6.1").skip_inference_flag(), "--skipInference");
        assert!(v("10.3.0").has_fp16_flag());
        assert!(!v("11.1.0").has_fp16_flag());
    }

    #[test]
    fn parses_text() {
        assert_eq!(
            "8.2.1.8".parse::<TrtVersion>(),
            Ok(TrtVersion::new(8, 2, 1))
        );
        assert_eq!("10.3".parse::<TrtVersion>(), Ok(TrtVersion::new(10, 3, 0)));
        assert!("ten".parse::<TrtVersion>().is_err());
        assert!("".parse::<TrtVersion>().is_err());
    }
}
