//! Fitting a calibration's decoder off the async threads: every epoch through the attached
//! model's per-window preprocessing, each candidate decoder cross-validated on the same folds,
//! then the best (or the only) one fitted on all epochs.

use std::time::Instant;

use super::plan::DecoderChoice;
use crate::decode::cross_validation::CrossValidation;
use crate::decode::erp::ErpError;
use crate::decode::input::WindowPreprocessor;
use crate::decode::native::{NativeDecoder, NativeKind};

pub struct FitPlan {
    pub choice: DecoderChoice,
    pub n_channels: usize,
    pub n_samples: usize,
    pub filters_per_class: usize,
    pub folds: usize,
}

pub struct Fitted {
    pub decoder: NativeDecoder,
    /// The fitted decoder's cross-validation.
    pub cv: CrossValidation,
    /// Every candidate's cross-validation, in the order tried.
    pub candidates: Vec<(NativeKind, CrossValidation)>,
    /// Wall time of cross-validation plus the final fit.
    pub seconds: f64,
}

/// `epochs`: (segment at the stream rate, is target), as the collector kept them. Blocking.
pub fn fit(plan: &FitPlan, preprocessor: &WindowPreprocessor, epochs: &[(Vec<f32>, bool)]) -> Result<Fitted, ErpError> {
    let started = Instant::now();
    let (c, t) = (plan.n_channels, plan.n_samples);
    let mut scratch = Vec::new();
    let inputs: Vec<Vec<f32>> = epochs
        .iter()
        .map(|(window, _)| {
            let mut input = vec![0.0f32; c * t];
            preprocessor.run(window, &mut scratch, &mut input);
            input
        })
        .collect();
    let labels: Vec<bool> = epochs.iter().map(|(_, l)| *l).collect();
    let refs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
    let mut candidates = Vec::new();
    let mut failure = None;
    for kind in plan.choice.candidates() {
        // With "best", a decoder that cannot be fitted on these epochs (a flat epoch makes a
        // covariance singular) leaves the choice to the others.
        match NativeDecoder::cross_validate(kind, &refs, &labels, c, t, plan.filters_per_class, plan.folds) {
            Ok(cv) => candidates.push((kind, cv)),
            Err(error) => {
                tracing::warn!(decoder = kind.as_str(), %error, "calibration candidate failed");
                failure = Some(error);
            }
        }
    }
    if candidates.is_empty() {
        return Err(failure.expect("at least one candidate was tried"));
    }
    // The highest cross-validated AUC; on a tie the first tried (xDAWN + LDA, the cheaper).
    let (kind, cv) = candidates.iter().copied().fold(candidates[0], |best, next| if next.1.auc > best.1.auc { next } else { best });
    let decoder = NativeDecoder::fit(kind, &refs, &labels, c, t, plan.filters_per_class)?;
    Ok(Fitted { decoder, cv, candidates, seconds: started.elapsed().as_secs_f64() })
}
