//! [`Lcg`]: the crate's one deterministic pseudo-random generator, for reproducible test cases
//! (the kernel check's generated inputs, the crate's own tests, benches and examples). Not for
//! anything that needs statistical quality or unpredictability.

/// A 64-bit linear congruential generator (Knuth's MMIX constants), read from its high bits.
///
/// # Examples
/// ```
/// use qnumeric::rng::Lcg;
/// let mut r = Lcg::new(7);
/// let u = r.unit_f32();
/// assert!((0.0..1.0).contains(&u));
/// assert!((-3..=3).contains(&r.int(-3, 3)));
/// assert_eq!(Lcg::new(7).unit_f32(), u); // the same seed, the same sequence
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lcg {
    state: u64,
}

impl Lcg {
    /// The multiplier.
    pub const MUL: u64 = 6_364_136_223_846_793_005;
    /// The increment.
    pub const INC: u64 = 1_442_695_040_888_963_407;

    /// A generator whose state is `seed`.
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Lcg { state: seed }
    }

    /// Advances and returns the new state.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_mul(Self::MUL).wrapping_add(Self::INC);
        self.state
    }

    /// Uniform in `[0, 1)` with 24 bits (exact in `f32`).
    pub fn unit_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[lo, hi)`: `lo + (hi − lo) · unit`.
    pub fn uniform_f32(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit_f32()
    }

    /// Uniform in `lo..=hi` (`lo <= hi`; the span is taken modulo, so tiny biases remain).
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        let span = (hi.wrapping_sub(lo) as u64).wrapping_add(1);
        let r = self.next_u64() >> 33;
        if span == 0 {
            lo.wrapping_add(r as i64)
        } else {
            lo.wrapping_add((r % span) as i64)
        }
    }

    /// One of `xs` (not empty).
    ///
    /// # Panics
    /// When `xs` is empty.
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[(self.next_u64() >> 33) as usize % xs.len()]
    }
}
