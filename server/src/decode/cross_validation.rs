//! How well a decoder fitted on calibration epochs generalises: stratified k-fold
//! cross-validation of the whole fit, scored by the area under the ROC curve and balanced
//! accuracy (a few lines each; no crate computes them on these shapes).

/// Cross-validated quality of a fit on the calibration epochs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrossValidation {
    pub folds: usize,
    pub auc: f64,
    pub balanced_accuracy: f64,
}

/// Stratified k-fold cross-validation: `fit` on all folds but one, `predict` the target
/// probability of each epoch of the fold left out.
pub fn cross_validate<M, E>(
    epochs: &[&[f32]],
    labels: &[bool],
    folds: usize,
    fit: impl Fn(&[&[f32]], &[bool]) -> Result<M, E>,
    predict: impl Fn(&M, &[f32]) -> f64,
) -> Result<CrossValidation, E> {
    let folds = folds.max(2);
    // Each class's epochs, in time order, cut into `folds` contiguous blocks (as scikit-learn's
    // unshuffled StratifiedKFold does). Dealt round-robin instead, neighbouring epochs, whose
    // windows overlap in time and share slow drifts, would sit on both sides of every split and
    // inflate the score. Deterministic: every decoder sees the same folds.
    let mut fold_of = vec![0usize; labels.len()];
    for class in [true, false] {
        let members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        for (n, &i) in members.iter().enumerate() {
            fold_of[i] = n * folds / members.len();
        }
    }
    let mut scores = vec![0.0; labels.len()];
    for fold in 0..folds {
        let train: Vec<usize> = (0..labels.len()).filter(|&i| fold_of[i] != fold).collect();
        let train_epochs: Vec<&[f32]> = train.iter().map(|&i| epochs[i]).collect();
        let train_labels: Vec<bool> = train.iter().map(|&i| labels[i]).collect();
        let model = fit(&train_epochs, &train_labels)?;
        for i in (0..labels.len()).filter(|&i| fold_of[i] == fold) {
            scores[i] = predict(&model, epochs[i]);
        }
    }
    Ok(CrossValidation { folds, auc: auc(&scores, labels), balanced_accuracy: balanced_accuracy(&scores, labels, 0.5) })
}

/// Area under the ROC curve (Mann-Whitney U with mid-ranks for ties).
pub fn auc(scores: &[f64], labels: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[order[k]] = mid;
        }
        i = j + 1;
    }
    let positives = labels.iter().filter(|&&l| l).count() as f64;
    let negatives = labels.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return f64::NAN;
    }
    let rank_sum: f64 = ranks.iter().zip(labels).filter(|(_, l)| **l).map(|(r, _)| r).sum();
    (rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

/// Mean of the true-positive and true-negative rates at `threshold`.
pub fn balanced_accuracy(scores: &[f64], labels: &[bool], threshold: f64) -> f64 {
    let rate = |class: bool| {
        let members: Vec<f64> = scores.iter().zip(labels).filter(|(_, l)| **l == class).map(|(s, _)| *s).collect();
        members.iter().filter(|&&s| (s > threshold) == class).count() as f64 / members.len().max(1) as f64
    };
    (rate(true) + rate(false)) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_and_balanced_accuracy_match_hand_computed_values() {
        let scores = [0.1, 0.4, 0.35, 0.8];
        let labels = [false, false, true, true];
        assert!((auc(&scores, &labels) - 0.75).abs() < 1e-12);
        assert!((balanced_accuracy(&scores, &labels, 0.5) - 0.75).abs() < 1e-12);
        assert!((auc(&[0.5, 0.5], &[true, false]) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn folds_are_stratified_and_every_epoch_is_scored_once_out_of_fold() {
        let labels: Vec<bool> = (0..20).map(|i| i % 4 == 0).collect();
        let epochs: Vec<Vec<f32>> = (0..20).map(|i| vec![i as f32]).collect();
        let refs: Vec<&[f32]> = epochs.iter().map(Vec::as_slice).collect();
        // The "model" remembers its training epochs; predicting one of them would score 1.
        let cv = cross_validate(
            &refs,
            &labels,
            5,
            |e, _| Ok::<_, ()>(e.iter().map(|x| x[0]).collect::<Vec<f32>>()),
            |seen, x| f64::from(u8::from(seen.contains(&x[0]))),
        )
        .unwrap();
        assert_eq!(cv.folds, 5);
        assert_eq!(cv.balanced_accuracy, 0.5, "no epoch was predicted by a model that saw it");
    }

    #[test]
    fn folds_are_contiguous_blocks_in_time() {
        // 20 epochs, one in four a target: each fold left out is a run of neighbouring epochs
        // of each class, never every fifth one.
        let labels: Vec<bool> = (0..20).map(|i| i % 4 == 0).collect();
        let epochs: Vec<Vec<f32>> = (0..20).map(|i| vec![i as f32]).collect();
        let refs: Vec<&[f32]> = epochs.iter().map(Vec::as_slice).collect();
        let folds_seen = std::cell::RefCell::new(Vec::new());
        cross_validate(
            &refs,
            &labels,
            5,
            |e, _| {
                folds_seen.borrow_mut().push(e.iter().map(|x| x[0] as usize).collect::<Vec<usize>>());
                Ok::<_, ()>(())
            },
            |_, _| 0.5,
        )
        .unwrap();
        let held_out: Vec<Vec<usize>> = folds_seen.borrow().iter().map(|train| (0..20).filter(|i| !train.contains(i)).collect()).collect();
        // Non-targets 1,2,3,5,6,7,... in blocks of 3; targets 0,4,8,12,16 one per fold.
        assert_eq!(held_out[0], vec![0, 1, 2, 3]);
        assert_eq!(held_out[1], vec![4, 5, 6, 7]);
        assert_eq!(held_out[4], vec![16, 17, 18, 19]);
    }
}
