//! The trainer's integration tests, one binary: the demo's training schedule and training runs.
mod demo_schedule;
mod training;
