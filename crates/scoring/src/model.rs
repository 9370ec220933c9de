//! The churn model, pure: L2-regularised logistic regression fitted by
//! Newton's method (IRLS) on standardised features, a seeded train /
//! hold-out split, and the hold-out metrics (ROC AUC, log loss, calibration
//! by decile). Per-account drivers are coefficient x standardised value.
//!
//! Newton rather than gradient descent: with a dozen features the Hessian is
//! tiny, the fit converges in a handful of iterations, and the result does
//! not depend on a learning rate. No random initialisation is involved, so
//! the same data and seed always give the same model.

use serde::{Deserialize, Serialize};

use crate::domain::{COMPONENTS, Inputs, Scorecard, component_name, components};
use bowtie_proto::common::Segment;
use bowtie_runtime::Minor;

/// Feature names, in vector order: the nine health components, then segment
/// indicators, tenure, MRR and contract length.
pub fn feature_names() -> Vec<String> {
    let mut names: Vec<String> = COMPONENTS
        .iter()
        .map(|c| component_name(*c).to_owned())
        .collect();
    for extra in [
        "segment_mid_market",
        "segment_enterprise",
        "tenure_days",
        "log_mrr",
        "contract_months",
    ] {
        names.push(extra.to_owned());
    }
    names
}

/// What the model knows of an account besides its health inputs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Profile {
    /// Segment.
    pub segment: Segment,
    /// Days since the account became a customer (or was created).
    pub tenure_days: Option<f64>,
    /// MRR in minor units.
    pub mrr: Minor,
    /// Longest billing term in months, when known.
    pub contract_months: Option<f64>,
}

/// The raw feature vector of an account (None = unknown).
pub fn features(inputs: &Inputs, card: &Scorecard, profile: &Profile) -> Vec<Option<f64>> {
    let present = components(inputs, card);
    let mut out: Vec<Option<f64>> = COMPONENTS
        .iter()
        .map(|c| {
            present
                .iter()
                .find(|s| s.component == *c)
                .map(|s| f64::from(s.score))
        })
        .collect();
    out.push(Some(f64::from(u8::from(
        profile.segment == Segment::MidMarket,
    ))));
    out.push(Some(f64::from(u8::from(
        profile.segment == Segment::Enterprise,
    ))));
    out.push(profile.tenure_days);
    out.push(Some((profile.mrr.get().max(0) as f64).ln_1p()));
    out.push(profile.contract_months);
    out
}

/// A trained model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Feature names.
    pub features: Vec<String>,
    /// Mean of each feature over the training rows where it is known (also
    /// the value an unknown feature is imputed with).
    pub means: Vec<f64>,
    /// Standard deviation of each feature (1 when constant).
    pub stds: Vec<f64>,
    /// Coefficients on the standardised features.
    pub weights: Vec<f64>,
    /// Intercept.
    pub intercept: f64,
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl Model {
    /// Standardised features (unknown -> 0, the mean).
    pub fn standardise(&self, x: &[Option<f64>]) -> Vec<f64> {
        x.iter()
            .enumerate()
            .map(|(j, v)| match v {
                Some(v) => {
                    (v - self.means.get(j).copied().unwrap_or(0.0))
                        / self.stds.get(j).copied().unwrap_or(1.0)
                }
                None => 0.0,
            })
            .collect()
    }

    /// Probability of churn.
    pub fn predict(&self, x: &[Option<f64>]) -> f64 {
        let z = self.standardise(x);
        sigmoid(self.intercept + z.iter().zip(&self.weights).map(|(a, b)| a * b).sum::<f64>())
    }

    /// Each feature's contribution (coefficient x standardised value), largest first.
    pub fn drivers(&self, x: &[Option<f64>]) -> Vec<(String, f64, f64)> {
        let z = self.standardise(x);
        let mut out: Vec<(String, f64, f64)> = self
            .features
            .iter()
            .enumerate()
            .map(|(j, name)| {
                (
                    name.clone(),
                    self.weights.get(j).copied().unwrap_or(0.0) * z[j],
                    x[j].unwrap_or(self.means[j]),
                )
            })
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        out
    }
}

/// Fits a model: standardises with the rows' known values, then runs Newton
/// iterations on the L2-penalised log likelihood (`lambda` on the weights,
/// not the intercept).
pub fn fit(names: Vec<String>, x: &[Vec<Option<f64>>], y: &[bool], lambda: f64) -> Model {
    let d = names.len();
    let mut means = vec![0.0; d];
    let mut stds = vec![1.0; d];
    for j in 0..d {
        let known: Vec<f64> = x
            .iter()
            .filter_map(|r| r.get(j).copied().flatten())
            .collect();
        if known.is_empty() {
            continue;
        }
        let n = known.len() as f64;
        let mean = known.iter().sum::<f64>() / n;
        let var = known.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        means[j] = mean;
        stds[j] = if var > 1e-12 { var.sqrt() } else { 1.0 };
    }
    let mut model = Model {
        features: names,
        means,
        stds,
        weights: vec![0.0; d],
        intercept: 0.0,
    };
    let z: Vec<Vec<f64>> = x.iter().map(|r| model.standardise(r)).collect();
    // Parameters: [intercept, w_1..w_d].
    let mut beta = vec![0.0; d + 1];
    for _ in 0..50 {
        let mut grad = vec![0.0; d + 1];
        let mut hess = vec![vec![0.0; d + 1]; d + 1];
        for (row, label) in z.iter().zip(y) {
            let eta = beta[0] + row.iter().zip(&beta[1..]).map(|(a, b)| a * b).sum::<f64>();
            let p = sigmoid(eta);
            let err = p - f64::from(u8::from(*label));
            let w = (p * (1.0 - p)).max(1e-9);
            let xi: Vec<f64> = std::iter::once(1.0).chain(row.iter().copied()).collect();
            for a in 0..=d {
                grad[a] += err * xi[a];
                for b in a..=d {
                    hess[a][b] += w * xi[a] * xi[b];
                }
            }
        }
        for a in 1..=d {
            grad[a] += lambda * beta[a];
            hess[a][a] += lambda;
        }
        #[allow(clippy::needless_range_loop)]
        for a in 0..=d {
            for b in 0..a {
                hess[a][b] = hess[b][a];
            }
        }
        let Some(step) = solve(hess, grad) else {
            break;
        };
        let mut largest: f64 = 0.0;
        for (b, s) in beta.iter_mut().zip(&step) {
            *b -= s;
            largest = largest.max(s.abs());
        }
        if largest < 1e-8 {
            break;
        }
    }
    model.intercept = beta[0];
    model.weights = beta[1..].to_vec();
    model
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting; `None`
/// when singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|i, j| a[*i][col].abs().total_cmp(&a[*j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            if f == 0.0 {
                continue;
            }
            let (upper, lower) = a.split_at_mut(row);
            for (x, p) in lower[0][col..n].iter_mut().zip(&upper[col][col..n]) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

/// A small deterministic generator (64-bit LCG), for the split.
#[derive(Debug, Clone)]
pub struct Lcg(pub u64);

impl Lcg {
    /// Next 31 random bits.
    pub fn step(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.step() as f64 / f64::from(1u32 << 31)
    }
}

/// Indices of the hold-out rows: a seeded shuffle, stratified by label so
/// both sides keep the churn rate, `holdout_percent`% of each label.
pub fn split(y: &[bool], seed: u64, holdout_percent: u32) -> (Vec<usize>, Vec<usize>) {
    let mut rng = Lcg(seed);
    let mut train = Vec::new();
    let mut test = Vec::new();
    for label in [false, true] {
        let mut idx: Vec<usize> = (0..y.len()).filter(|i| y[*i] == label).collect();
        for i in (1..idx.len()).rev() {
            let j = (rng.step() % (i as u64 + 1)) as usize;
            idx.swap(i, j);
        }
        let hold = (idx.len() * holdout_percent as usize).div_ceil(100);
        let hold = hold.min(idx.len().saturating_sub(1)).max(1).min(idx.len());
        test.extend_from_slice(&idx[..hold]);
        train.extend_from_slice(&idx[hold..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

/// ROC AUC: the probability that a random churner is ranked above a random
/// stayer (ties count half); 0.5 when one class is absent.
pub fn auc(p: &[f64], y: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|a, b| p[*a].total_cmp(&p[*b]));
    // Average ranks with ties.
    let mut ranks = vec![0.0; p.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && p[idx[j + 1]] == p[idx[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[idx[k]] = rank;
        }
        i = j + 1;
    }
    let pos = y.iter().filter(|v| **v).count() as f64;
    let neg = y.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return 0.5;
    }
    let sum: f64 = ranks
        .iter()
        .zip(y)
        .filter(|(_, v)| **v)
        .map(|(r, _)| r)
        .sum();
    (sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// Mean log loss, probabilities clipped to [1e-15, 1 - 1e-15].
pub fn log_loss(p: &[f64], y: &[bool]) -> f64 {
    if p.is_empty() {
        return 0.0;
    }
    let total: f64 = p
        .iter()
        .zip(y)
        .map(|(p, y)| {
            let p = p.clamp(1e-15, 1.0 - 1e-15);
            if *y { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum();
    total / p.len() as f64
}

/// One calibration bin: (min, max, mean predicted, observed rate, count).
pub type Bin = (f64, f64, f64, f64, usize);

/// Calibration table: the rows sorted by prediction, cut into (at most) ten
/// groups of near-equal size.
pub fn calibration(p: &[f64], y: &[bool]) -> Vec<Bin> {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|a, b| p[*a].total_cmp(&p[*b]));
    let n = idx.len();
    let bins = n.min(10);
    (0..bins)
        .map(|b| {
            let chunk = &idx[b * n / bins..(b + 1) * n / bins];
            let count = chunk.len();
            let preds: Vec<f64> = chunk.iter().map(|i| p[*i]).collect();
            let churned = chunk.iter().filter(|i| y[**i]).count();
            (
                preds.first().copied().unwrap_or(0.0),
                preds.last().copied().unwrap_or(0.0),
                preds.iter().sum::<f64>() / count.max(1) as f64,
                churned as f64 / count.max(1) as f64,
                count,
            )
        })
        .collect()
}

/// Metrics on the hold-out split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Training rows.
    pub train: usize,
    /// Hold-out rows.
    pub holdout: usize,
    /// Share of churners among all rows.
    pub churn_rate: f64,
    /// Hold-out ROC AUC.
    pub auc: f64,
    /// Hold-out mean log loss.
    pub log_loss: f64,
    /// Hold-out calibration by decile.
    pub calibration: Vec<Bin>,
}

/// L2 strength used by [`train`].
pub const LAMBDA: f64 = 1.0;

/// Splits, fits on the training rows and evaluates on the hold-out rows.
pub fn train(
    x: &[Vec<Option<f64>>],
    y: &[bool],
    seed: u64,
    holdout_percent: u32,
) -> (Model, Metrics) {
    let (tr, te) = split(y, seed, holdout_percent);
    let xs: Vec<Vec<Option<f64>>> = tr.iter().map(|i| x[*i].clone()).collect();
    let ys: Vec<bool> = tr.iter().map(|i| y[*i]).collect();
    let model = fit(feature_names(), &xs, &ys, LAMBDA);
    let p: Vec<f64> = te.iter().map(|i| model.predict(&x[*i])).collect();
    let yt: Vec<bool> = te.iter().map(|i| y[*i]).collect();
    let metrics = Metrics {
        train: tr.len(),
        holdout: te.len(),
        churn_rate: y.iter().filter(|v| **v).count() as f64 / y.len().max(1) as f64,
        auc: auc(&p, &yt),
        log_loss: log_loss(&p, &yt),
        calibration: calibration(&p, &yt),
    };
    (model, metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_correctly_ordered_pairs_and_ties_as_half() {
        // Churners 0.9, 0.4; stayers 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1,
        // 0.4<0.5, 0.4>0.1) = 3 of 4 = 0.75.
        let p = [0.9, 0.4, 0.5, 0.1];
        let y = [true, true, false, false];
        assert!((auc(&p, &y) - 0.75).abs() < 1e-12);
        // All tied: 0.5.
        assert!((auc(&[0.3; 4], &y) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn log_loss_of_a_coin_is_ln_2() {
        let l = log_loss(&[0.5, 0.5], &[true, false]);
        assert!((l - std::f64::consts::LN_2).abs() < 1e-12);
    }

    #[test]
    fn calibration_cuts_sorted_predictions_into_deciles() {
        let p: Vec<f64> = (0..20).map(|i| f64::from(i) / 20.0).collect();
        let y: Vec<bool> = (0..20).map(|i| i >= 10).collect();
        let bins = calibration(&p, &y);
        assert_eq!(bins.len(), 10);
        assert_eq!(bins[0].4, 2);
        // First bin: predictions 0.0 and 0.05, mean 0.025, nobody churned.
        assert!((bins[0].2 - 0.025).abs() < 1e-12);
        assert_eq!(bins[0].3, 0.0);
        assert_eq!(bins[9].3, 1.0);
    }

    #[test]
    fn newton_recovers_a_one_feature_logistic_model() {
        // y = 1 when x > 0, except every fifth point is flipped (overlap, so
        // the fit is finite): the coefficient is positive.
        let names = vec!["x".to_owned()];
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in -50i32..50 {
            let v = f64::from(i) / 10.0;
            x.push(vec![Some(v)]);
            y.push((v > 0.0) != (i.rem_euclid(5) == 0));
        }
        let m = fit(names, &x, &y, 0.1);
        assert!(m.weights[0] > 0.0);
        assert!(m.predict(&[Some(4.0)]) > 0.7);
        assert!(m.predict(&[Some(-4.0)]) < 0.3);
    }

    /// A synthetic population where churn truly depends on usage decline and
    /// late payments; everything else is noise.
    fn population(n: usize, seed: u64) -> (Vec<Vec<Option<f64>>>, Vec<bool>) {
        let mut rng = Lcg(seed);
        let card = Scorecard::default();
        let now = bowtie_runtime::Instant::from_micros(1_767_225_600_000_000);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for _ in 0..n {
            let prior = 10 + (rng.unit() * 20.0) as i64;
            let ratio = rng.unit() * 1.4;
            let recent = (prior as f64 * ratio) as i64;
            let late = (rng.unit() * 3.5) as i64;
            let inputs = Inputs {
                now,
                usage_recent: recent,
                usage_prior: prior,
                active_users: Some(1 + (rng.unit() * 20.0) as i64),
                seats: Some(20),
                paying: true,
                late_payments: late,
                downgrades: i64::from(rng.unit() < 0.1),
                tickets_recent: (rng.unit() * 4.0) as i64,
                tickets_prior: (rng.unit() * 4.0) as i64,
                nps: ((rng.unit() * 10.0) as i64, 1),
                listening: true,
                renewal_at: Some(now.plus_days((rng.unit() * 300.0) as i64)),
                ..Inputs::default()
            };
            let profile = Profile {
                segment: [Segment::Smb, Segment::MidMarket, Segment::Enterprise]
                    [(rng.step() % 3) as usize],
                tenure_days: Some(30.0 + rng.unit() * 1000.0),
                mrr: Minor(1000 + (rng.unit() * 50_000.0) as i64),
                contract_months: Some(if rng.unit() < 0.5 { 1.0 } else { 12.0 }),
            };
            let decline = (1.0 - ratio).max(0.0);
            let logit = -2.0 + 5.0 * decline + 1.3 * late as f64;
            y.push(rng.unit() < sigmoid(logit));
            x.push(features(&inputs, &card, &profile));
        }
        (x, y)
    }

    #[test]
    fn the_model_finds_usage_decline_and_late_payments_and_ranks_well_on_hold_out() {
        let (x, y) = population(3000, 7);
        let (model, metrics) = train(&x, &y, 42, 30);
        assert!(metrics.auc > 0.8, "hold-out AUC {}", metrics.auc);
        assert_eq!(metrics.holdout + metrics.train, 3000);
        assert_eq!(metrics.calibration.len(), 10);
        let mut ranked: Vec<(&String, f64)> = model
            .features
            .iter()
            .zip(model.weights.iter().map(|w| w.abs()))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let top: Vec<&str> = ranked.iter().take(2).map(|(n, _)| n.as_str()).collect();
        assert!(
            top.contains(&"usage_trend") && top.contains(&"payment_punctuality"),
            "top drivers {top:?}"
        );
        // Higher usage trend and punctuality scores lower the risk.
        assert!(model.weights[0] < 0.0 && model.weights[2] < 0.0);
    }

    #[test]
    fn training_is_deterministic_for_a_seed() {
        let (x, y) = population(600, 11);
        let (a, ma) = train(&x, &y, 5, 30);
        let (b, mb) = train(&x, &y, 5, 30);
        assert_eq!(a, b);
        assert_eq!(ma, mb);
        let (c, _) = train(&x, &y, 6, 30);
        assert_ne!(a, c, "another seed splits differently");
    }

    #[test]
    fn an_account_s_drivers_are_coefficient_times_standardised_value() {
        let model = Model {
            features: vec!["a".into(), "b".into()],
            means: vec![10.0, 0.0],
            stds: vec![2.0, 1.0],
            weights: vec![-1.5, 0.5],
            intercept: 0.0,
        };
        // a = 6: z = (6 - 10) / 2 = -2, contribution 3.0; b = 1: 0.5.
        let d = model.drivers(&[Some(6.0), Some(1.0)]);
        assert_eq!(d[0].0, "a");
        assert!((d[0].1 - 3.0).abs() < 1e-12);
        assert!((d[1].1 - 0.5).abs() < 1e-12);
        // p = sigmoid(3.5).
        assert!((model.predict(&[Some(6.0), Some(1.0)]) - sigmoid(3.5)).abs() < 1e-12);
    }
}
