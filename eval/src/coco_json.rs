//! COCO-format export of ground truth and predictions, for pycocotools and other COCO tools.
//!
//! Images get ids 1..=N in the evaluator's order (sorted by path) and categories keep the
//! dataset's class ids, so a COCO tool sees exactly what [`crate::evaluate`] sees.

use serde_json::{Value, json};
use trident_core::dataset::ImageTruth;
use trident_core::prediction::Prediction;

/// The COCO ground-truth document (`images`, `annotations`, `categories`).
pub fn ground_truth(truths: &[ImageTruth], names: &[String]) -> Value {
    let images: Vec<Value> = truths
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": i + 1, "file_name": t.stem, "width": t.width, "height": t.height}))
        .collect();
    let mut annotations = Vec::new();
    for (i, t) in truths.iter().enumerate() {
        for (class, b) in &t.boxes {
            annotations.push(json!({
                "id": annotations.len() + 1,
                "image_id": i + 1,
                "category_id": class,
                "bbox": b.to_array(),
                "area": b.w * b.h,
                "iscrowd": 0,
            }));
        }
    }
    let categories: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"id": i, "name": n}))
        .collect();
    json!({"images": images, "annotations": annotations, "categories": categories})
}

/// The COCO results document: a list of `{image_id, category_id, bbox, score}`.
/// Predictions for stems not in `truths` are left out (the evaluator rejects them first).
pub fn results(truths: &[ImageTruth], preds: &[Prediction]) -> Value {
    let ids: std::collections::HashMap<&str, usize> = truths
        .iter()
        .enumerate()
        .map(|(i, t)| (t.stem.as_str(), i + 1))
        .collect();
    Value::Array(
        preds
            .iter()
            .filter_map(|p| {
                ids.get(p.image.as_str())
                    .map(|id| json!({"image_id": id, "category_id": p.class, "bbox": p.bbox, "score": p.score}))
            })
            .collect(),
    )
}
