//! The background batch loader: one producer thread assembles batches with rayon while the
//! training step runs, two batches ahead.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use super::CachedSplit;
use super::augment::{Augmentation, Augmented, augment, sample_rng};
use crate::loss::Targets;

/// A batch as plain memory, assembled off the training thread.
pub struct HostBatch {
    pub size: u32,
    /// `[B, 3, size, size]` in 0–1.
    pub images: Vec<f32>,
    /// Per image: class, x1, y1, x2, y2 in input pixels.
    pub boxes: Vec<Vec<(usize, [f32; 4])>>,
}

impl HostBatch {
    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    pub fn instances(&self) -> usize {
        self.boxes.iter().map(Vec::len).sum()
    }

    /// Moves the batch to `device`: images `[B, 3, S, S]` and padded targets.
    pub fn to_device(&self, device: Device) -> (Tensor, Targets) {
        let b = self.len() as i64;
        let s = i64::from(self.size);
        let images = Tensor::from_slice(&self.images)
            .view([b, 3, s, s])
            .to_device(device);
        let m = self.boxes.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut boxes = vec![0f32; self.len() * m * 4];
        let mut labels = vec![0i64; self.len() * m];
        let mut mask = vec![0f32; self.len() * m];
        for (i, img) in self.boxes.iter().enumerate() {
            for (j, (c, b)) in img.iter().enumerate() {
                let k = i * m + j;
                boxes[k * 4..k * 4 + 4].copy_from_slice(b);
                labels[k] = *c as i64;
                mask[k] = 1.0;
            }
        }
        let m = m as i64;
        let targets = Targets {
            boxes: Tensor::from_slice(&boxes).view([b, m, 4]).to_device(device),
            labels: Tensor::from_slice(&labels).view([b, m]).to_device(device),
            mask: Tensor::from_slice(&mask)
                .view([b, m])
                .to_kind(Kind::Float)
                .to_device(device),
        };
        (images, targets)
    }
}

/// Settings of one epoch's loader.
#[derive(Clone, Debug)]
pub struct EpochPlan {
    pub seed: u64,
    pub epoch: u64,
    pub batch: usize,
    pub size: u32,
    pub augmentation: Augmentation,
    pub mosaic: bool,
    /// How often each sample is drawn per epoch (the critical species' oversampling); `None`:
    /// once each.
    pub repeat: Option<Arc<Vec<f64>>>,
}

/// Draws per epoch for repeat factors `r`: ⌊rᵢ⌋ each plus the fractional parts' sum, rounded —
/// the same every epoch, so the schedule's batches per epoch hold.
pub fn epoch_len(repeat: Option<&[f64]>, samples: usize) -> usize {
    match repeat {
        None => samples,
        Some(r) => {
            let whole: usize = r.iter().map(|f| f.floor() as usize).sum();
            let frac: f64 = r.iter().map(|f| f - f.floor()).sum();
            whole + frac.round() as usize
        }
    }
}

/// One epoch's sample order: every sample ⌊rᵢ⌋ times, plus one more draw for as many samples
/// as the fractional parts add up to (chosen with probability proportional to them, by the
/// epoch's seed), shuffled.
pub fn epoch_order(samples: usize, repeat: Option<&[f64]>, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut order: Vec<usize> = match repeat {
        None => (0..samples).collect(),
        Some(r) => {
            let mut order: Vec<usize> = r
                .iter()
                .enumerate()
                .flat_map(|(i, f)| std::iter::repeat_n(i, f.floor() as usize))
                .collect();
            let extra = epoch_len(Some(r), samples) - order.len();
            // Weighted draws without replacement (Efraimidis–Spirakis keys).
            let mut keyed: Vec<(f64, usize)> = r
                .iter()
                .enumerate()
                .filter(|(_, f)| f.fract() > 0.0)
                .map(|(i, f)| (rng.random::<f64>().powf(1.0 / f.fract()), i))
                .collect();
            keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
            order.extend(keyed.into_iter().take(extra).map(|(_, i)| i));
            order
        }
    };
    order.shuffle(rng);
    order
}

/// Batches of one epoch, produced in the background in a seed-determined order.
pub struct EpochLoader {
    rx: Receiver<HostBatch>,
    handle: Option<JoinHandle<()>>,
    pub batches: usize,
}

impl EpochLoader {
    pub fn start(data: Arc<CachedSplit>, plan: EpochPlan) -> Self {
        let order = epoch_order(
            data.samples.len(),
            plan.repeat.as_deref().map(Vec::as_slice),
            &mut ChaCha8Rng::seed_from_u64(
                plan.seed.wrapping_add(plan.epoch.wrapping_mul(0x9e37_79b9)),
            ),
        );
        let batches = order.len().div_ceil(plan.batch);
        let (tx, rx) = sync_channel(2);
        let handle = std::thread::Builder::new()
            .name("trident-loader".into())
            .spawn(move || {
                for (k, chunk) in order.chunks(plan.batch).enumerate() {
                    let first = (k * plan.batch) as u64;
                    let samples: Vec<Augmented> = chunk
                        .par_iter()
                        .enumerate()
                        .map(|(j, &idx)| {
                            let mut rng = sample_rng(plan.seed, plan.epoch, first + j as u64);
                            augment(
                                &data,
                                idx,
                                plan.size,
                                &plan.augmentation,
                                plan.mosaic,
                                &mut rng,
                            )
                        })
                        .collect();
                    if tx.send(collate(&samples, plan.size)).is_err() {
                        return; // the consumer stopped early (time budget, Ctrl-C)
                    }
                }
            })
            .expect("spawn loader thread");
        EpochLoader {
            rx,
            handle: Some(handle),
            batches,
        }
    }
}

impl Iterator for EpochLoader {
    type Item = HostBatch;
    fn next(&mut self) -> Option<HostBatch> {
        match self.rx.recv() {
            Ok(batch) => Some(batch),
            Err(_) => {
                // The producer is gone: the epoch is complete, or it panicked — then re-raise
                // rather than pass a partial epoch off as a whole one.
                if let Some(h) = self.handle.take()
                    && let Err(panic) = h.join()
                {
                    std::panic::resume_unwind(panic);
                }
                None
            }
        }
    }
}

impl Drop for EpochLoader {
    fn drop(&mut self) {
        // Unblock the producer, then wait for it so no thread outlives the epoch.
        let (_, dummy) = sync_channel(0);
        drop(std::mem::replace(&mut self.rx, dummy));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Rescales a batch to one of `sizes` (drawn by the seed), boxes with it.
pub fn multi_scale(
    x: tch::Tensor,
    t: crate::loss::Targets,
    imgsz: u32,
    sizes: &[u32],
    seed: u64,
    epoch: usize,
    batch: usize,
) -> (tch::Tensor, crate::loss::Targets) {
    use rand::Rng;
    let mut rng = crate::data::augment::sample_rng(seed ^ 0x6d73, epoch as u64, batch as u64);
    let size = sizes[rng.random_range(0..sizes.len())];
    if size == imgsz {
        return (x, t);
    }
    let r = f64::from(size) / f64::from(imgsz);
    let x = x.upsample_bilinear2d([i64::from(size), i64::from(size)], false, None, None);
    let t = crate::loss::Targets {
        boxes: t.boxes * r,
        ..t
    };
    (x, t)
}

fn collate(samples: &[Augmented], size: u32) -> HostBatch {
    let plane = (size * size) as usize;
    let mut images = vec![0f32; samples.len() * 3 * plane];
    images
        .par_chunks_mut(3 * plane)
        .zip(samples)
        .for_each(|(dst, a)| {
            for (p, px) in a.pixels.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    dst[c * plane + p] = f32::from(px[c]) / 255.0;
                }
            }
        });
    HostBatch {
        size,
        images,
        boxes: samples
            .iter()
            .map(|a| {
                a.boxes
                    .iter()
                    .map(|(c, b)| (*c, [b.x1 as f32, b.y1 as f32, b.x2 as f32, b.y2 as f32]))
                    .collect()
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(order: &[usize], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &i in order {
            c[i] += 1;
        }
        c
    }

    #[test]
    fn without_repeats_every_sample_comes_once() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let order = epoch_order(10, None, &mut rng);
        assert_eq!(counts(&order, 10), vec![1; 10]);
    }

    #[test]
    fn critical_samples_come_as_often_as_their_factor_and_epochs_keep_their_length() {
        // Samples 0 and 3 hold a critical species, drawn 3× and 2.5×.
        let r = vec![3.0, 1.0, 1.0, 2.5, 1.0];
        assert_eq!(epoch_len(Some(&r), 5), 3 + 1 + 1 + 2 + 1 + 1);
        let mut extra_for_3 = 0;
        for epoch in 0..200 {
            let mut rng = ChaCha8Rng::seed_from_u64(epoch);
            let order = epoch_order(5, Some(&r), &mut rng);
            assert_eq!(order.len(), epoch_len(Some(&r), 5));
            let c = counts(&order, 5);
            assert_eq!((c[0], c[1], c[2], c[4]), (3, 1, 1, 1));
            assert!(c[3] == 2 || c[3] == 3);
            extra_for_3 += c[3] - 2;
        }
        // Only sample 3 has a fraction, and one extra draw per epoch: it always gets it.
        assert_eq!(extra_for_3, 200);
        // Two fractional samples share one extra draw, in proportion to their fractions.
        let r = vec![1.75, 1.25];
        let mut first = 0;
        for epoch in 0..2000 {
            let order = epoch_order(2, Some(&r), &mut ChaCha8Rng::seed_from_u64(epoch));
            assert_eq!(order.len(), 3);
            first += usize::from(counts(&order, 2)[0] == 2);
        }
        assert!((1300..1700).contains(&first), "{first} of 2000");
    }
}
