//! The trainer's integration tests, one binary: the demo's training schedule, training runs and
//! Ultralytics start weights.
mod demo_schedule;
mod training;
mod ultralytics_weights;
