//! Device selection.

use tch::Device;

use crate::error::{Error, Result};

/// Resolves `auto | cpu | cuda | cuda:N` against what libtorch sees.
pub fn select_device(name: &str) -> Result<Device> {
    let cuda = tch::Cuda::is_available();
    match name {
        "auto" => Ok(if cuda { Device::Cuda(0) } else { Device::Cpu }),
        "cpu" => Ok(Device::Cpu),
        _ if name == "cuda" || name.starts_with("cuda:") => {
            if !cuda {
                return Err(Error::Device(format!(
                    "--device {name}: libtorch sees no CUDA device (no GPU, or a CPU-only libtorch); use --device cpu"
                )));
            }
            let index: usize = name
                .strip_prefix("cuda:")
                .map_or(Ok(0), str::parse)
                .map_err(|_| {
                    Error::Device(format!("--device {name}: expected cuda or cuda:<index>"))
                })?;
            let count = tch::Cuda::device_count() as usize;
            if index >= count {
                return Err(Error::Device(format!(
                    "--device {name}: only {count} CUDA device(s)"
                )));
            }
            Ok(Device::Cuda(index))
        }
        _ => Err(Error::Device(format!(
            "--device {name}: expected auto, cpu, cuda or cuda:<index>"
        ))),
    }
}
