//! The workspace-level tests, one binary: agreement with pycocotools, the crate graph's
//! boundaries, the documentation's links and length, and the loopback fleet (real OpenSSH servers
//! playing Nano units).

mod coco_parity;
mod dependency_boundaries;
mod docs;
mod fleet_harness;
