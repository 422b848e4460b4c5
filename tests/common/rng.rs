//! The seeded random numbers of the random-operation tests.

/// splitmix64: small, fast, and the same sequence everywhere for a seed. Test files add the
/// draws they need (below, chance, pick, ...) in impl blocks of their own.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A draw in 0..n (0 when n is 0), as u64 or usize.
    pub fn below<N: Bound>(&mut self, n: N) -> N {
        let n = n.to_u64();
        N::from_u64(if n == 0 { 0 } else { self.next() % n })
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100u64) < percent
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

/// The integer types a draw can be asked in.
pub trait Bound: Copy {
    fn to_u64(self) -> u64;
    fn from_u64(v: u64) -> Self;
}

impl Bound for u64 {
    fn to_u64(self) -> u64 {
        self
    }
    fn from_u64(v: u64) -> u64 {
        v
    }
}

/// Plain integer literals (non-negative ones).
impl Bound for i32 {
    fn to_u64(self) -> u64 {
        self.max(0) as u64
    }
    fn from_u64(v: u64) -> i32 {
        v as i32
    }
}

impl Bound for usize {
    fn to_u64(self) -> u64 {
        self as u64
    }
    fn from_u64(v: u64) -> usize {
        v as usize
    }
}
