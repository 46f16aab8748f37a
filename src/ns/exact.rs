//! Exact sums of `f64` values (Shewchuk's expansions, as Python's `math.fsum`): the total of
//! the same values is the same correctly rounded number whatever the order and grouping of
//! the additions. What makes merged [`ErrorStats`](super::ErrorStats) of shards equal to one
//! pass over all the batches, bit for bit.

/// A sum kept exactly as non-overlapping partials (a few, for sums of like magnitudes).
/// Two sums are equal when their values are (the partials of one value can differ).
#[derive(Debug, Clone, Default)]
pub(crate) struct ExactSum {
    partials: Vec<f64>,
}

impl PartialEq for ExactSum {
    fn eq(&self, other: &Self) -> bool {
        self.value() == other.value()
    }
}

impl ExactSum {
    /// Adds `x` exactly (finite values; a non-finite one makes the sum non-finite).
    pub(crate) fn add(&mut self, x: f64) {
        if !x.is_finite() || self.partials.iter().any(|p| !p.is_finite()) {
            let v = self.value() + x;
            self.partials.clear();
            self.partials.push(v);
            return;
        }
        let mut x = x;
        let mut i = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[i] = lo;
                i += 1;
            }
            x = hi;
        }
        self.partials.truncate(i);
        self.partials.push(x);
    }

    /// Adds another exact sum (its exact value).
    pub(crate) fn add_sum(&mut self, other: &ExactSum) {
        for &p in &other.partials {
            self.add(p);
        }
    }

    /// Multiplies by `2^e` (exact unless a partial leaves the normal range).
    pub(crate) fn mul_pow2(&mut self, e: i32) {
        for p in &mut self.partials {
            *p = crate::metrics::mul_pow2(*p, e);
        }
    }

    /// The sum, correctly rounded (`math.fsum`'s final step).
    pub(crate) fn value(&self) -> f64 {
        let p = &self.partials;
        let Some(&last) = p.last() else {
            return 0.0;
        };
        if p.len() == 1 || !last.is_finite() {
            return last;
        }
        let mut i = p.len() - 1;
        let mut hi = last;
        let mut lo = 0.0;
        while i > 0 {
            i -= 1;
            let x = hi;
            let y = p[i];
            hi = x + y;
            let yr = hi - x;
            lo = y - yr;
            if lo != 0.0 {
                break;
            }
        }
        // Round half to even across the remaining partials: when the rest has the sign of
        // `lo`, `hi + 2·lo` decides.
        if i > 0 && ((lo < 0.0 && p[i - 1] < 0.0) || (lo > 0.0 && p[i - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            let yr = x - hi;
            if y == yr {
                hi = x;
            }
        }
        hi
    }

    /// The partials (for serialization).
    #[cfg(any(test, feature = "serde"))]
    pub(crate) fn partials(&self) -> &[f64] {
        &self.partials
    }

    /// A sum from serialized partials (any finite values: they are re-added).
    #[cfg(any(test, feature = "serde"))]
    pub(crate) fn from_values(values: &[f64]) -> Self {
        let mut s = ExactSum::default();
        for &v in values {
            s.add(v);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::ExactSum;

    fn sum(xs: &[f64]) -> f64 {
        let mut s = ExactSum::default();
        for &x in xs {
            s.add(x);
        }
        s.value()
    }

    #[test]
    fn exact_where_naive_sums_are_not() {
        assert_eq!(sum(&[1e100, 1.0, -1e100]), 1.0);
        assert_eq!(sum(&[0.1; 10]), 1.0);
        assert_eq!(sum(&[1.0, 1e-16, 1e-16]), 1.0000000000000002);
        assert_eq!(sum(&[]), 0.0);
    }

    #[test]
    fn order_and_grouping_do_not_matter() {
        let mut r = crate::rng::Lcg::new(5);
        let xs: Vec<f64> = (0..2000)
            .map(|i| {
                let v = f64::from(r.unit_f32()) - 0.3;
                v * 10f64.powi(i % 17 - 8)
            })
            .collect();
        let whole = sum(&xs);
        let mut rev = xs.clone();
        rev.reverse();
        assert_eq!(sum(&rev), whole);
        for cut in [1, 7, 999, 1999] {
            let mut a = ExactSum::default();
            let mut b = ExactSum::default();
            for &x in &xs[..cut] {
                a.add(x);
            }
            for &x in &xs[cut..] {
                b.add(x);
            }
            a.add_sum(&b);
            assert_eq!(a.value(), whole);
            assert_eq!(ExactSum::from_values(a.partials()).value(), whole);
        }
    }

    #[test]
    fn non_finite_values_make_the_sum_non_finite() {
        assert_eq!(sum(&[1.0, f64::INFINITY]), f64::INFINITY);
        assert!(sum(&[f64::INFINITY, f64::NEG_INFINITY]).is_nan());
    }
}
