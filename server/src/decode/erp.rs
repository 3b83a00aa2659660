//! Native ERP decoder: xDAWN spatial filtering followed by shrinkage LDA, fitted in the server
//! from labelled epochs (live calibration), no Python at run time.
//!
//! * xDAWN (Rivet et al. 2009): for each class, the spatial filters that maximise the power of
//!   the class's average response relative to the total signal power: the generalised
//!   eigenvectors of (evoked covariance, signal covariance).
//! * Shrinkage LDA: class means and the pooled within-class covariance with Ledoit-Wolf
//!   shrinkage (the estimator of sklearn's `ledoit_wolf`), equal priors, so
//!   p(target) = sigmoid(w.x + b) like sklearn's LinearDiscriminantAnalysis(solver="lsqr",
//!   shrinkage="auto", priors=[.5, .5]).
//!
//! Linear algebra comes from nalgebra (symmetric eigendecomposition, Cholesky); the statistics
//! around it are a few lines each and written here.

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ErpError {
    #[error("need at least {needed} epochs of each class, got {targets} targets and {non_targets} non-targets")]
    TooFewEpochs { needed: usize, targets: usize, non_targets: usize },
    #[error("epoch {index} has {got} values, expected {expected} (channels x samples)")]
    BadEpoch { index: usize, got: usize, expected: usize },
    #[error("the signal covariance is not positive definite (flat or duplicated channels?)")]
    Degenerate,
}

/// A fitted decoder: everything needed to score an epoch, serialisable as a JSON artifact.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct XdawnLda {
    pub n_channels: usize,
    pub n_samples: usize,
    /// Spatial filters, row-major [n_components x n_channels].
    pub filters: Vec<f64>,
    pub n_components: usize,
    /// LDA weights over the filtered epoch, flattened component-major [n_components x n_samples].
    pub weights: Vec<f64>,
    pub bias: f64,
    pub shrinkage: f64,
}

impl XdawnLda {
    /// `epochs`: each channel-major [n_channels x n_samples] (the model input after the card's
    /// preprocessing); `labels`: true for targets. `filters_per_class` xDAWN components are
    /// kept for each of the two classes.
    pub fn fit(
        epochs: &[&[f32]],
        labels: &[bool],
        n_channels: usize,
        n_samples: usize,
        filters_per_class: usize,
    ) -> Result<Self, ErpError> {
        let matrices = epoch_matrices(epochs, labels, n_channels, n_samples)?;

        // Signal covariance over all epochs, lightly regularised (dry electrodes, few channels).
        let mut signal = DMatrix::<f64>::zeros(n_channels, n_channels);
        for x in &matrices {
            signal += x * x.transpose();
        }
        signal /= (matrices.len() * n_samples) as f64;
        let ridge = 1e-6 * signal.trace() / n_channels as f64;
        for i in 0..n_channels {
            signal[(i, i)] += ridge;
        }
        let cholesky = signal.clone().cholesky().ok_or(ErpError::Degenerate)?;
        let l_inv = cholesky.l().try_inverse().ok_or(ErpError::Degenerate)?;

        let per_class = filters_per_class.clamp(1, n_channels);
        let mut filters = Vec::new();
        for class in [true, false] {
            let members: Vec<&DMatrix<f64>> = matrices.iter().zip(labels).filter(|(_, l)| **l == class).map(|(m, _)| m).collect();
            let mut evoked = DMatrix::<f64>::zeros(n_channels, n_samples);
            for m in &members {
                evoked += *m;
            }
            evoked /= members.len() as f64;
            let evoked_cov = &evoked * evoked.transpose() / n_samples as f64;
            // Generalised symmetric eigenproblem via whitening: M = L^-1 S_P L^-T.
            let whitened = &l_inv * evoked_cov * l_inv.transpose();
            let whitened = (&whitened + whitened.transpose()) * 0.5;
            let eigen = whitened.symmetric_eigen();
            let mut order: Vec<usize> = (0..n_channels).collect();
            order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
            for &k in order.iter().take(per_class) {
                let v = l_inv.transpose() * eigen.eigenvectors.column(k);
                filters.extend(v.iter().copied());
            }
        }
        let n_components = filters.len() / n_channels;
        let filter_matrix = DMatrix::from_row_slice(n_components, n_channels, &filters);

        let features: Vec<DVector<f64>> = matrices.iter().map(|x| flatten(&(&filter_matrix * x))).collect();
        let (weights, bias, shrinkage) = shrinkage_lda(&features, labels)?;
        Ok(Self { n_channels, n_samples, filters, n_components, weights: weights.iter().copied().collect(), bias, shrinkage })
    }

    /// Whether the parameters fit together (a saved file read back must, before it decodes).
    pub fn check(&self) -> Result<(), String> {
        let (c, t, k) = (self.n_channels, self.n_samples, self.n_components);
        if self.filters.len() != k * c || self.weights.len() != k * t {
            return Err(format!("{k} components need {} filter and {} weight values", k * c, k * t));
        }
        Ok(())
    }

    /// Target probability of one epoch (channel-major [n_channels x n_samples]).
    pub fn predict(&self, epoch: &[f32]) -> f64 {
        let (c, t) = (self.n_channels, self.n_samples);
        if epoch.len() != c * t {
            return 0.5;
        }
        let mut score = self.bias;
        for k in 0..self.n_components {
            let filter = &self.filters[k * c..(k + 1) * c];
            let weights = &self.weights[k * t..(k + 1) * t];
            for (i, w) in weights.iter().enumerate() {
                let mut component = 0.0;
                for (ch, f) in filter.iter().enumerate() {
                    component += f * f64::from(epoch[ch * t + i]);
                }
                score += w * component;
            }
        }
        sigmoid(score)
    }
}

/// The fitting epochs as [n_channels x n_samples] matrices, once each has the right size and
/// both classes have at least 3 (what either native decoder needs to fit).
pub(super) fn epoch_matrices(
    epochs: &[&[f32]],
    labels: &[bool],
    n_channels: usize,
    n_samples: usize,
) -> Result<Vec<DMatrix<f64>>, ErpError> {
    let expected = n_channels * n_samples;
    if let Some((index, e)) = epochs.iter().enumerate().find(|(_, e)| e.len() != expected) {
        return Err(ErpError::BadEpoch { index, got: e.len(), expected });
    }
    let targets = labels.iter().filter(|&&l| l).count();
    let (needed, non_targets) = (3, labels.len() - targets);
    if targets < needed || non_targets < needed {
        return Err(ErpError::TooFewEpochs { needed, targets, non_targets });
    }
    Ok(epochs.iter().map(|e| DMatrix::from_row_iterator(n_channels, n_samples, e.iter().map(|&v| f64::from(v)))).collect())
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Row-major flattening of a component x time matrix.
fn flatten(m: &DMatrix<f64>) -> DVector<f64> {
    DVector::from_iterator(m.len(), (0..m.nrows()).flat_map(|r| (0..m.ncols()).map(move |c| m[(r, c)])))
}

/// Two-class LDA with Ledoit-Wolf shrinkage of the pooled within-class covariance and equal
/// priors. Returns (weights, bias, shrinkage).
fn shrinkage_lda(features: &[DVector<f64>], labels: &[bool]) -> Result<(DVector<f64>, f64, f64), ErpError> {
    let d = features[0].len();
    let mean_of = |class: bool| {
        let members: Vec<&DVector<f64>> = features.iter().zip(labels).filter(|(_, l)| **l == class).map(|(f, _)| f).collect();
        let mut mean = DVector::<f64>::zeros(d);
        for f in &members {
            mean += *f;
        }
        mean / members.len() as f64
    };
    let (mean_target, mean_other) = (mean_of(true), mean_of(false));
    // Within-class centred data, n x d.
    let n = features.len();
    let mut centred = DMatrix::<f64>::zeros(n, d);
    for (row, (f, &l)) in features.iter().zip(labels).enumerate() {
        let c = f - if l { &mean_target } else { &mean_other };
        centred.row_mut(row).copy_from(&c.transpose());
    }
    let (covariance, shrinkage) = ledoit_wolf(&centred);
    let difference = &mean_target - &mean_other;
    let weights = covariance.cholesky().ok_or(ErpError::Degenerate)?.solve(&difference);
    let bias = -weights.dot(&((&mean_target + &mean_other) * 0.5));
    Ok((weights, bias, shrinkage))
}

/// Ledoit-Wolf shrunk covariance of centred data `x` (n x d), as sklearn.covariance.ledoit_wolf
/// (assume_centered=True): (1 - a) S + a mu I with mu = tr(S) / d.
fn ledoit_wolf(x: &DMatrix<f64>) -> (DMatrix<f64>, f64) {
    let (n, d) = (x.nrows() as f64, x.ncols());
    let empirical = x.transpose() * x / n;
    let mu = empirical.trace() / d as f64;
    let x2 = x.map(|v| v * v);
    let beta_sum = (x2.transpose() * &x2).sum();
    let delta_sum = (x.transpose() * x).map(|v| v * v).sum() / (n * n);
    let beta = (beta_sum / n - delta_sum) / (d as f64 * n);
    let delta = (delta_sum - 2.0 * mu * empirical.trace() + d as f64 * mu * mu) / d as f64;
    let shrinkage = if delta <= 0.0 { 0.0 } else { beta.min(delta) / delta };
    let mut shrunk = empirical * (1.0 - shrinkage);
    for i in 0..d {
        shrunk[(i, i)] += shrinkage * mu;
    }
    (shrunk, shrinkage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::cross_validation::{auc, cross_validate};

    /// Deterministic pseudo-random numbers (no dependency needed for a test).
    fn noise(seed: &mut u64) -> f64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed % 10_000) as f64 / 5_000.0 - 1.0
    }

    fn synthetic(n: usize, amplitude: f64, seed: u64) -> (Vec<Vec<f32>>, Vec<bool>) {
        let (c, t) = (4, 32);
        let mut s = seed;
        let mut epochs = Vec::new();
        let mut labels = Vec::new();
        for k in 0..n {
            let target = k % 5 == 0;
            let mut e = vec![0.0f32; c * t];
            // Large noise shared by all channels (which spatial filtering can remove) plus
            // small independent noise per channel.
            let common: Vec<f64> = (0..t).map(|_| noise(&mut s) * 3.0).collect();
            for ch in 0..c {
                for i in 0..t {
                    let common = common[i];
                    let erp =
                        if target { amplitude * (-((i as f64 - 16.0).powi(2)) / 20.0).exp() * [1.0, 0.5, -0.5, 1.0][ch] } else { 0.0 };
                    e[ch * t + i] = (common + noise(&mut s) + erp) as f32;
                }
            }
            epochs.push(e);
            labels.push(target);
        }
        (epochs, labels)
    }

    #[test]
    fn learns_a_buried_erp_and_cross_validates_well() {
        let (epochs, labels) = synthetic(300, 1.0, 42);
        let refs: Vec<&[f32]> = epochs.iter().map(Vec::as_slice).collect();
        let cv = cross_validate(&refs, &labels, 5, |e, l| XdawnLda::fit(e, l, 4, 32, 2), XdawnLda::predict).unwrap();
        assert!(cv.auc > 0.9, "{cv:?}");
        assert!(cv.balanced_accuracy > 0.8, "{cv:?}");
        let model = XdawnLda::fit(&refs, &labels, 4, 32, 2).unwrap();
        let (test, test_labels) = synthetic(200, 1.0, 7);
        let scores: Vec<f64> = test.iter().map(|e| model.predict(e)).collect();
        assert!(auc(&scores, &test_labels) > 0.9);
    }

    #[test]
    fn without_an_erp_it_stays_near_chance() {
        let (epochs, labels) = synthetic(300, 0.0, 3);
        let refs: Vec<&[f32]> = epochs.iter().map(Vec::as_slice).collect();
        let cv = cross_validate(&refs, &labels, 5, |e, l| XdawnLda::fit(e, l, 4, 32, 2), XdawnLda::predict).unwrap();
        assert!((cv.auc - 0.5).abs() < 0.12, "{cv:?}");
    }

    #[test]
    fn refuses_too_few_epochs_and_wrong_sizes() {
        let (epochs, mut labels) = synthetic(10, 1.0, 1);
        let refs: Vec<&[f32]> = epochs.iter().map(Vec::as_slice).collect();
        labels.iter_mut().for_each(|l| *l = false);
        labels[0] = true;
        assert!(matches!(XdawnLda::fit(&refs, &labels, 4, 32, 2), Err(ErpError::TooFewEpochs { .. })));
        assert!(matches!(XdawnLda::fit(&refs, &labels, 4, 31, 2), Err(ErpError::BadEpoch { .. })));
    }

    #[test]
    fn ledoit_wolf_matches_sklearn_on_a_small_example() {
        // sklearn.covariance.ledoit_wolf(X, assume_centered=True) on this X gives shrinkage
        // 0.924496644295302 (computed with scikit-learn 1.9.1).
        let x = DMatrix::from_row_slice(4, 2, &[1.0, 2.0, -1.0, 0.5, 0.5, -1.0, -0.5, -1.5]);
        let (_, shrinkage) = ledoit_wolf(&x);
        assert!((shrinkage - 0.924496644295302).abs() < 1e-9, "{shrinkage}");
    }
}
