//! Native Riemannian ERP decoder: xDAWN covariances, projected to the tangent space at their
//! Riemannian mean, classified by L2-regularised logistic regression: the classic strong
//! single-trial P300 pipeline, computed exactly as pyRiemann 0.12 and scikit-learn compute
//! `make_pipeline(XdawnCovariances(nfilter=k), TangentSpace(metric="riemann"),
//! LogisticRegression())`, so a lab's offline analysis and the served decoder agree
//! (`tests/python/test_riemann.py` checks probabilities within 1e-4). ONNX cannot express the
//! eigendecompositions, so it runs natively.
//!
//! * xDAWN (pyRiemann's `Xdawn`): signal covariance of all epochs concatenated, then for each
//!   class (non-target first) the generalised eigenvectors of (covariance of the class's mean
//!   epoch, signal covariance), largest first, each scaled to unit norm; the `k` first are the
//!   class's filters, and the filtered class means are the prototypes P.
//! * Each epoch X becomes the sample covariance of [P; F X] (rows centred over time).
//! * Tangent space: log(M^-1/2 C M^-1/2) at the Riemannian (affine-invariant) mean M of the
//!   training covariances, its upper triangle with off-diagonal terms times sqrt(2).
//! * Logistic regression as scikit-learn's default: penalty 0.5 |w|^2 + sum of log-losses
//!   (C = 1, the intercept unpenalised), solved here by Newton's method to full convergence.
//!
//! Matrix algebra is nalgebra's (Cholesky, symmetric eigendecomposition); the matrix functions
//! and the mean follow pyRiemann's definitions and are a few lines each.

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

use super::erp::{ErpError, epoch_matrices};

/// pyRiemann's `mean_riemann` defaults.
const MEAN_TOLERANCE: f64 = 1e-8;
const MEAN_MAX_ITERATIONS: usize = 50;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct XdawnRiemann {
    pub n_channels: usize,
    pub n_samples: usize,
    /// Spatial filters, row-major [n_filters x n_channels] (non-target class's first).
    pub filters: Vec<f64>,
    pub n_filters: usize,
    /// Filtered class means, row-major [n_filters x n_samples].
    pub prototypes: Vec<f64>,
    /// M^-1/2 of the training covariances' Riemannian mean, [2 n_filters x 2 n_filters].
    pub reference_isqrt: Vec<f64>,
    /// Logistic-regression weights over the tangent vector.
    pub weights: Vec<f64>,
    pub bias: f64,
}

impl XdawnRiemann {
    /// `epochs`: each channel-major [n_channels x n_samples]; `labels`: true for targets;
    /// `filters_per_class`: xDAWN filters kept per class (pyRiemann's `nfilter`).
    pub fn fit(
        epochs: &[&[f32]],
        labels: &[bool],
        n_channels: usize,
        n_samples: usize,
        filters_per_class: usize,
    ) -> Result<Self, ErpError> {
        let matrices = epoch_matrices(epochs, labels, n_channels, n_samples)?;

        // Signal covariance: every epoch side by side, centred per channel over all of them.
        let mut all = DMatrix::<f64>::zeros(n_channels, matrices.len() * n_samples);
        for (i, x) in matrices.iter().enumerate() {
            all.columns_mut(i * n_samples, n_samples).copy_from(x);
        }
        let signal = sample_covariance(&all);
        let l_inv = signal.clone().cholesky().ok_or(ErpError::Degenerate)?.l().try_inverse().ok_or(ErpError::Degenerate)?;

        // Both classes' filters together must not outnumber the channels: beyond that the rows
        // of F X are linearly dependent and every covariance of [P; F X] is singular.
        let per_class = filters_per_class.clamp(1, (n_channels / 2).max(1));
        let mut filters = DMatrix::<f64>::zeros(2 * per_class, n_channels);
        let mut prototypes = DMatrix::<f64>::zeros(2 * per_class, n_samples);
        for (c, class) in [false, true].into_iter().enumerate() {
            let mut mean = DMatrix::<f64>::zeros(n_channels, n_samples);
            let members = labels.iter().filter(|&&l| l == class).count();
            for (x, _) in matrices.iter().zip(labels).filter(|(_, l)| **l == class) {
                mean += x;
            }
            mean /= members as f64;
            // Generalised eigenproblem (C_P v = lambda C_x v) by whitening with C_x = L L^T.
            let whitened = symmetric(&(&l_inv * sample_covariance(&mean) * l_inv.transpose()));
            let eigen = whitened.symmetric_eigen();
            let mut order: Vec<usize> = (0..n_channels).collect();
            order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
            for (row, &k) in order.iter().take(per_class).enumerate() {
                let v = l_inv.transpose() * eigen.eigenvectors.column(k);
                let v = &v / v.norm();
                filters.row_mut(c * per_class + row).copy_from(&v.transpose());
            }
            let class_filters = filters.rows(c * per_class, per_class).into_owned();
            prototypes.rows_mut(c * per_class, per_class).copy_from(&(class_filters * &mean));
        }

        let covariances: Vec<DMatrix<f64>> = matrices.iter().map(|x| epoch_covariance(&filters, &prototypes, x)).collect();
        let reference = riemannian_mean(&covariances)?;
        let reference_isqrt = matrix_function(&reference, |v| 1.0 / v.sqrt());
        let features: Vec<DVector<f64>> = covariances.iter().map(|c| tangent_vector(&reference_isqrt, c)).collect::<Result<_, _>>()?;
        let (weights, bias) = logistic_regression(&features, labels)?;
        Ok(Self {
            n_channels,
            n_samples,
            filters: row_major(&filters),
            n_filters: 2 * per_class,
            prototypes: row_major(&prototypes),
            reference_isqrt: row_major(&reference_isqrt),
            weights: weights.iter().copied().collect(),
            bias,
        })
    }

    /// Target probability of one epoch (channel-major [n_channels x n_samples]). A degenerate
    /// epoch (a flat segment: no covariance to take the logarithm of) scores 0.5.
    pub fn predict(&self, epoch: &[f32]) -> f64 {
        let (c, t, f) = (self.n_channels, self.n_samples, self.n_filters);
        if epoch.len() != c * t {
            return 0.5;
        }
        let x = DMatrix::from_row_iterator(c, t, epoch.iter().map(|&v| f64::from(v)));
        let filters = DMatrix::from_row_slice(f, c, &self.filters);
        let prototypes = DMatrix::from_row_slice(f, t, &self.prototypes);
        let isqrt = DMatrix::from_row_slice(2 * f, 2 * f, &self.reference_isqrt);
        match tangent_vector(&isqrt, &epoch_covariance(&filters, &prototypes, &x)) {
            Ok(features) => sigmoid(DVector::from_column_slice(&self.weights).dot(&features) + self.bias),
            Err(_) => 0.5,
        }
    }
}

impl XdawnRiemann {
    /// Whether the parameters fit together (a saved file read back must, before it decodes).
    pub fn check(&self) -> Result<(), String> {
        let (c, t, f) = (self.n_channels, self.n_samples, self.n_filters);
        let d = 2 * f;
        let sizes = [
            ("filters", self.filters.len(), f * c),
            ("prototypes", self.prototypes.len(), f * t),
            ("reference_isqrt", self.reference_isqrt.len(), d * d),
            ("weights", self.weights.len(), d * (d + 1) / 2),
        ];
        if f == 0 || c == 0 || t == 0 {
            return Err("n_filters, n_channels and n_samples must be positive".into());
        }
        match sizes.iter().find(|(_, got, want)| got != want) {
            Some((name, got, want)) => Err(format!("{name} has {got} values, expected {want}")),
            None => Ok(()),
        }
    }
}

fn row_major(m: &DMatrix<f64>) -> Vec<f64> {
    m.transpose().iter().copied().collect()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn symmetric(m: &DMatrix<f64>) -> DMatrix<f64> {
    (m + m.transpose()) * 0.5
}

/// Sample covariance of the rows of `x` (each centred over its columns), divided by the number
/// of columns: pyRiemann's "scm".
fn sample_covariance(x: &DMatrix<f64>) -> DMatrix<f64> {
    let n = x.ncols() as f64;
    let mut centred = x.clone();
    for mut row in centred.row_iter_mut() {
        let mean = row.sum() / n;
        row.add_scalar_mut(-mean);
    }
    symmetric(&(&centred * centred.transpose() / n))
}

/// Covariance of the prototypes stacked on the filtered epoch: [P; F X].
fn epoch_covariance(filters: &DMatrix<f64>, prototypes: &DMatrix<f64>, x: &DMatrix<f64>) -> DMatrix<f64> {
    let filtered = filters * x;
    let rows = prototypes.nrows() + filtered.nrows();
    let mut stacked = DMatrix::<f64>::zeros(rows, x.ncols());
    stacked.rows_mut(0, prototypes.nrows()).copy_from(prototypes);
    stacked.rows_mut(prototypes.nrows(), filtered.nrows()).copy_from(&filtered);
    sample_covariance(&stacked)
}

/// f applied to the eigenvalues of a symmetric matrix: V f(L) V^T.
fn matrix_function(m: &DMatrix<f64>, f: impl Fn(f64) -> f64) -> DMatrix<f64> {
    let eigen = symmetric(m).symmetric_eigen();
    let values = DMatrix::from_diagonal(&eigen.eigenvalues.map(f));
    &eigen.eigenvectors * values * eigen.eigenvectors.transpose()
}

/// The logarithm of an SPD matrix, or Degenerate when it is not positive definite.
fn spd_log(m: &DMatrix<f64>) -> Result<DMatrix<f64>, ErpError> {
    let eigen = symmetric(m).symmetric_eigen();
    if eigen.eigenvalues.iter().any(|&v| !(v > 0.0 && v.is_finite())) {
        return Err(ErpError::Degenerate);
    }
    let values = DMatrix::from_diagonal(&eigen.eigenvalues.map(f64::ln));
    Ok(&eigen.eigenvectors * values * eigen.eigenvectors.transpose())
}

/// pyRiemann's `mean_riemann`: gradient descent from the arithmetic mean, with its step-size
/// rule and stopping criteria.
fn riemannian_mean(covariances: &[DMatrix<f64>]) -> Result<DMatrix<f64>, ErpError> {
    let n = covariances.len() as f64;
    let mut mean = covariances.iter().fold(DMatrix::<f64>::zeros(covariances[0].nrows(), covariances[0].ncols()), |a, c| a + c) / n;
    let (mut nu, mut tau) = (1.0f64, f64::MAX);
    for _ in 0..MEAN_MAX_ITERATIONS {
        let sqrt = matrix_function(&mean, f64::sqrt);
        let isqrt = matrix_function(&mean, |v| 1.0 / v.sqrt());
        let mut step = DMatrix::<f64>::zeros(mean.nrows(), mean.ncols());
        for c in covariances {
            step += spd_log(&(&isqrt * c * &isqrt))?;
        }
        step /= n;
        mean = &sqrt * matrix_function(&(&step * nu), f64::exp) * &sqrt;
        let criterion = step.norm();
        let h = nu * criterion;
        if h < tau {
            nu *= 0.95;
            tau = h;
        } else {
            nu *= 0.5;
        }
        if criterion <= MEAN_TOLERANCE || nu <= MEAN_TOLERANCE {
            break;
        }
    }
    Ok(mean)
}

/// Upper triangle (row by row) of log(M^-1/2 C M^-1/2), off-diagonal terms times sqrt(2).
fn tangent_vector(reference_isqrt: &DMatrix<f64>, covariance: &DMatrix<f64>) -> Result<DVector<f64>, ErpError> {
    let log = spd_log(&(reference_isqrt * covariance * reference_isqrt))?;
    let d = log.nrows();
    let mut out = Vec::with_capacity(d * (d + 1) / 2);
    for i in 0..d {
        out.push(log[(i, i)]);
        for j in i + 1..d {
            out.push(std::f64::consts::SQRT_2 * log[(i, j)]);
        }
    }
    // numpy's triu_indices order is row by row with the diagonal first in each row.
    Ok(DVector::from_vec(out))
}

/// scikit-learn's default logistic regression (C = 1, L2 on the weights, intercept free), by
/// Newton's method with backtracking to a gradient below 1e-10. Returns (weights, intercept).
fn logistic_regression(features: &[DVector<f64>], labels: &[bool]) -> Result<(DVector<f64>, f64), ErpError> {
    let d = features[0].len();
    let augmented: Vec<DVector<f64>> = features.iter().map(|f| f.clone().insert_row(d, 1.0)).collect();
    let objective = |theta: &DVector<f64>| {
        let penalty = 0.5 * theta.rows(0, d).norm_squared();
        let loss: f64 = augmented
            .iter()
            .zip(labels)
            .map(|(x, &y)| {
                let z = x.dot(theta);
                softplus(z) - if y { z } else { 0.0 }
            })
            .sum();
        penalty + loss
    };
    let mut theta = DVector::<f64>::zeros(d + 1);
    for _ in 0..100 {
        let mut gradient = theta.clone();
        gradient[d] = 0.0;
        let mut hessian = DMatrix::<f64>::identity(d + 1, d + 1);
        // A vanishing ridge on the intercept keeps the Hessian invertible when every
        // probability saturates; it does not move the optimum.
        hessian[(d, d)] = 1e-12;
        for (x, &y) in augmented.iter().zip(labels) {
            let p = sigmoid(x.dot(&theta));
            gradient += x * (p - f64::from(u8::from(y)));
            hessian.ger(p * (1.0 - p), x, x, 1.0);
        }
        if gradient.amax() < 1e-10 {
            break;
        }
        let direction = hessian.cholesky().ok_or(ErpError::Degenerate)?.solve(&gradient);
        let (current, slope) = (objective(&theta), gradient.dot(&direction));
        let mut step = 1.0;
        while step > 1e-12 && objective(&(&theta - &direction * step)) > current - 1e-4 * step * slope {
            step *= 0.5;
        }
        theta -= direction * step;
    }
    Ok((theta.rows(0, d).into_owned(), theta[d]))
}

/// log(1 + e^z) without overflow.
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mean_of_one_matrix_is_itself_and_commuting_matrices_average_their_logs() {
        let a = DMatrix::from_row_slice(2, 2, &[2.0, 0.5, 0.5, 1.0]);
        let mean = riemannian_mean(std::slice::from_ref(&a)).unwrap();
        assert!((mean - &a).amax() < 1e-9);
        // Diagonal matrices: the Riemannian mean is the geometric mean of the diagonals.
        let (p, q) =
            (DMatrix::from_diagonal(&DVector::from_vec(vec![1.0, 4.0])), DMatrix::from_diagonal(&DVector::from_vec(vec![9.0, 1.0])));
        let mean = riemannian_mean(&[p, q]).unwrap();
        assert!((mean[(0, 0)] - 3.0).abs() < 1e-7 && (mean[(1, 1)] - 2.0).abs() < 1e-7, "{mean}");
    }

    /// Epochs of 4 channels x 32 samples: noise, and a positive bump on targets.
    fn epochs(n: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<bool>) {
        let mut s = seed;
        let mut noise = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 10_000) as f32 / 5_000.0 - 1.0
        };
        (0..n)
            .map(|k| {
                let target = k % 4 == 0;
                let e = (0..4 * 32).map(|i| noise() + if target && (12..20).contains(&(i % 32)) { 1.0 } else { 0.0 }).collect();
                (e, target)
            })
            .unzip()
    }

    #[test]
    fn too_many_filters_are_clamped_and_inconsistent_parameters_are_caught() {
        let (epochs, labels) = epochs(120, 9);
        let refs: Vec<&[f32]> = epochs.iter().map(Vec::as_slice).collect();
        // 3 per class on 4 channels would make every covariance singular: clamped to 2.
        let model = XdawnRiemann::fit(&refs, &labels, 4, 32, 3).unwrap();
        assert_eq!(model.n_filters, 4);
        assert!(model.check().is_ok());
        // What the calibrated card states is the count used, not the one requested.
        let decoder = crate::decode::native::NativeDecoder::XdawnRiemann(model.clone());
        assert_eq!(decoder.filters_per_class(), 2);
        let p = model.predict(refs[0]);
        assert!(p > 0.0 && p < 1.0);
        assert_eq!(model.predict(&refs[0][..10]), 0.5, "a short epoch scores 0.5 instead of panicking");
        let mut broken = model.clone();
        broken.weights.pop();
        assert!(broken.check().unwrap_err().contains("weights"));
    }

    #[test]
    fn logistic_regression_matches_scikit_learn() {
        // sklearn.linear_model.LogisticRegression(tol=1e-12, max_iter=10000).fit(X, y) on
        // X = [[0], [1], [2], [3]], y = [0, 1, 0, 1]: coef 0.45287526, intercept -0.6793129 (rounded).
        let features: Vec<DVector<f64>> = (0..4).map(|i| DVector::from_vec(vec![f64::from(i)])).collect();
        let (w, b) = logistic_regression(&features, &[false, true, false, true]).unwrap();
        assert!((w[0] - 0.45287526).abs() < 1e-6 && (b + 0.6793129).abs() < 1e-6, "{w} {b}");
    }
}
