//! A model's raw output as a prediction's result: class probabilities and the top labels, gallery
//! items nearest to a predicted embedding, or the embedding itself.

use myelin_proto::v1 as pb;

use super::gallery::Gallery;
use crate::card::{ModelCard, OutputKind, Task};
use crate::clock;
use crate::metrics as m;

/// Gallery items listed per retrieval prediction when the request says 0.
pub const DEFAULT_RETRIEVAL_TOP_K: usize = 5;

pub fn retrieval_top_k(requested: usize) -> usize {
    if requested == 0 { DEFAULT_RETRIEVAL_TOP_K } else { requested }
}

/// Searches an attachment's gallery with a predicted embedding.
pub fn search_gallery(gallery: &Gallery, embedding: &[f32], top_k: usize, scores: &mut Vec<f32>) -> pb::Retrieval {
    let k = retrieval_top_k(top_k);
    let started = clock::now_ns();
    let found = gallery.search(embedding, k, scores);
    let search_ns = clock::now_ns().saturating_sub(started);
    m::observe_gallery_search(search_ns);
    pb::Retrieval {
        ids: found.iter().map(|&(i, _)| gallery.ids[i].clone()).collect(),
        scores: found.iter().map(|&(_, s)| s).collect(),
        search_ns,
    }
}

/// Fills `prediction` from the model's main output (no gallery involved).
pub fn fill_result(prediction: &mut pb::Prediction, card: &ModelCard, mut output: Vec<f32>, top_k: usize) {
    match card.task {
        Task::Classification => {
            if card.output.kind == OutputKind::Logits {
                softmax(&mut output);
            }
            let mut order: Vec<usize> = (0..output.len()).collect();
            order.sort_by(|&a, &b| output[b].total_cmp(&output[a]));
            order.truncate(top_k);
            prediction.result = Some(pb::prediction::Result::Classification(pb::Classification {
                labels: card.labels.clone(),
                top_labels: order.iter().map(|&i| card.labels.get(i).cloned().unwrap_or_default()).collect(),
                top_probabilities: order.iter().map(|&i| output[i]).collect(),
                probabilities: output,
            }));
        }
        Task::Retrieval if card.output.kind == OutputKind::Embedding => {
            // No gallery attached: the embedding is the result.
            prediction.embedding = output;
        }
        Task::Retrieval => {
            let mut order: Vec<usize> = (0..output.len()).collect();
            order.sort_by(|&a, &b| output[b].total_cmp(&output[a]));
            order.truncate(retrieval_top_k(top_k));
            prediction.result = Some(pb::prediction::Result::Retrieval(pb::Retrieval {
                ids: order.iter().map(|&i| card.labels.get(i).cloned().unwrap_or_else(|| i.to_string())).collect(),
                scores: order.iter().map(|&i| output[i]).collect(),
                search_ns: 0,
            }));
        }
        Task::Embedding => prediction.embedding = output,
    }
}

fn softmax(values: &mut [f32]) {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in values.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in values.iter_mut() {
        *v /= sum;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn softmax_sums_to_one_and_keeps_the_order() {
        let mut v = [1.0f32, 3.0, 2.0];
        super::softmax(&mut v);
        assert!((v.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(v[1] > v[2] && v[2] > v[0]);
    }

    #[test]
    fn zero_top_k_means_the_default() {
        assert_eq!(super::retrieval_top_k(0), super::DEFAULT_RETRIEVAL_TOP_K);
        assert_eq!(super::retrieval_top_k(3), 3);
    }
}
