//! What the daemon has done, for `stratafs stats MOUNTPOINT`: requests by opcode with their
//! latency (log2 histograms, lock-free counters on the hot path), and the report text. The
//! report is read through the private xattr `trusted.stratafs.stats` of the mount's root,
//! which the kernel lets only CAP_SYS_ADMIN read (`user.stratafs.stats` on a plain user's
//! mount, which only that user can reach).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The FUSE requests the daemon serves, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Lookup,
    Forget,
    Getattr,
    Setattr,
    Readlink,
    Mknod,
    Mkdir,
    Unlink,
    Rmdir,
    Symlink,
    Rename,
    Link,
    Open,
    Read,
    Write,
    Flush,
    Release,
    Fsync,
    Opendir,
    Readdir,
    Readdirplus,
    Fsyncdir,
    Statfs,
    Setxattr,
    Getxattr,
    Listxattr,
    Removexattr,
    Access,
    Create,
    Fallocate,
    Lseek,
    Ioctl,
    CopyFileRange,
}

const OPS: [Op; 33] = [
    Op::Lookup,
    Op::Forget,
    Op::Getattr,
    Op::Setattr,
    Op::Readlink,
    Op::Mknod,
    Op::Mkdir,
    Op::Unlink,
    Op::Rmdir,
    Op::Symlink,
    Op::Rename,
    Op::Link,
    Op::Open,
    Op::Read,
    Op::Write,
    Op::Flush,
    Op::Release,
    Op::Fsync,
    Op::Opendir,
    Op::Readdir,
    Op::Readdirplus,
    Op::Fsyncdir,
    Op::Statfs,
    Op::Setxattr,
    Op::Getxattr,
    Op::Listxattr,
    Op::Removexattr,
    Op::Access,
    Op::Create,
    Op::Fallocate,
    Op::Lseek,
    Op::Ioctl,
    Op::CopyFileRange,
];

/// Latency buckets: bucket i holds durations below 2^i microseconds (the last: the rest).
const BUCKETS: usize = 24;

struct Counter {
    count: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
    max_us: AtomicU64,
}

impl Counter {
    fn new() -> Counter {
        Counter {
            count: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            max_us: AtomicU64::new(0),
        }
    }

    /// The upper bound (µs) of the bucket holding the `q` quantile.
    fn quantile(&self, q: f64) -> u64 {
        let n = self.count.load(Ordering::Relaxed);
        let want = ((n as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= want {
                return 1 << i;
            }
        }
        self.max_us.load(Ordering::Relaxed)
    }
}

pub struct Stats {
    started: Instant,
    ops: Vec<Counter>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            ops: OPS.iter().map(|_| Counter::new()).collect(),
        }
    }
}

/// Times one request; counted when dropped (whichever way the handler returns).
pub struct Timing<'a> {
    counter: &'a Counter,
    start: Instant,
}

impl Drop for Timing<'_> {
    fn drop(&mut self) {
        let us = self.start.elapsed().as_micros() as u64;
        let c = self.counter;
        c.count.fetch_add(1, Ordering::Relaxed);
        let bucket = (64 - us.leading_zeros() as usize).min(BUCKETS - 1);
        c.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        c.max_us.fetch_max(us, Ordering::Relaxed);
    }
}

impl Stats {
    pub fn time(&self, op: Op) -> Timing<'_> {
        Timing {
            counter: &self.ops[op as usize],
            start: Instant::now(),
        }
    }

    /// The report: uptime, then every opcode seen with its count and latency quantiles,
    /// then the lines the caller adds (union counters, memory).
    pub fn report(&self, extra: &[String]) -> String {
        let mut out = format!(
            "stratafs daemon pid {}, up {:.0} s\n",
            std::process::id(),
            self.started.elapsed().as_secs_f64()
        );
        let total: u64 = self
            .ops
            .iter()
            .map(|c| c.count.load(Ordering::Relaxed))
            .sum();
        out.push_str(&format!("requests: {total}\n"));
        out.push_str("  opcode              count  p50<=us  p90<=us  p99<=us   max us\n");
        for (op, c) in OPS.iter().zip(&self.ops) {
            let n = c.count.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            out.push_str(&format!(
                "  {:<16} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
                format!("{op:?}").to_uppercase(),
                n,
                c.quantile(0.5),
                c.quantile(0.9),
                c.quantile(0.99),
                c.max_us.load(Ordering::Relaxed)
            ));
        }
        for line in extra {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_table_follows_the_enum() {
        for (i, op) in OPS.iter().enumerate() {
            assert_eq!(*op as usize, i);
        }
    }

    #[test]
    fn counts_and_quantiles() {
        let s = Stats::default();
        for _ in 0..10 {
            drop(s.time(Op::Lookup));
        }
        let c = &s.ops[Op::Lookup as usize];
        assert_eq!(c.count.load(Ordering::Relaxed), 10);
        assert!(c.quantile(0.5) >= 1);
        let r = s.report(&["copy-ups: 0".into()]);
        assert!(r.contains("LOOKUP") && r.contains("requests: 10") && r.contains("copy-ups: 0"));
        assert!(!r.contains("GETATTR"));
    }
}
