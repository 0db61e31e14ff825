//! Content-defined chunking of one segment (FastCDC v2020).
//!
//! Cut points depend only on the bytes since the previous cut, and every
//! segment is chunked from its own start: so the chunks of a segment depend
//! only on that segment's bytes. That is what lets a backup reuse whole
//! segments, and re-chunk only around a change.

use fastcdc::v2020::FastCDC;
use serde::{Deserialize, Serialize};

/// FastCDC size limits (bytes), repository constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkParams {
    /// See `docs/chunk-size.md` for the measurements behind this choice.
    fn default() -> Self {
        ChunkParams::from_avg(128 << 10)
    }
}

impl ChunkParams {
    /// The usual shape: min = avg/4, max = avg*4.
    pub fn from_avg(avg: u32) -> Self {
        ChunkParams {
            min: avg / 4,
            avg,
            max: avg.saturating_mul(4),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let (min, avg, max) = (self.min as usize, self.avg as usize, self.max as usize);
        let in_range = (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max);
        let even = min % 2 == 0 && avg % 2 == 0 && max % 2 == 0;
        if !(in_range && even && min <= avg && avg <= max) {
            return Err(format!(
                "chunk sizes min {min} / avg {avg} / max {max} are not usable: need even \
                 sizes with min <= avg <= max, min {MINIMUM_MIN}..{MINIMUM_MAX}, \
                 avg {AVERAGE_MIN}..{AVERAGE_MAX}, max {MAXIMUM_MIN}..{MAXIMUM_MAX}"
            ));
        }
        Ok(())
    }
}

/// Calls `f(offset, length)` for each chunk of `data`, in order. The chunks
/// cover `data` exactly; an empty input has no chunk.
pub fn for_each_chunk(params: &ChunkParams, data: &[u8], mut f: impl FnMut(usize, usize)) {
    if data.is_empty() {
        return;
    }
    let cdc = FastCDC::new(
        data,
        params.min as usize,
        params.avg as usize,
        params.max as usize,
    );
    for c in cdc {
        f(c.offset, c.length);
    }
}

/// True when every byte is zero (such chunks are stored as zero runs).
pub fn is_zero(data: &[u8]) -> bool {
    // 16 bytes at a time: several GB/s, so zero runs cost little to find.
    let mut words = data.chunks_exact(16);
    let all = words
        .by_ref()
        .all(|w| u128::from_ne_bytes(w.try_into().unwrap_or([1; 16])) == 0);
    all && words.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0; 1000]));
        for i in [0, 7, 16, 999] {
            let mut v = vec![0u8; 1000];
            v[i] = 1;
            assert!(!is_zero(&v), "{i}");
        }
    }

    #[test]
    fn params_validation() {
        ChunkParams::default().validate().unwrap();
        ChunkParams::from_avg(1 << 20).validate().unwrap();
        assert!(
            ChunkParams {
                min: 10,
                avg: 20,
                max: 30
            }
            .validate()
            .is_err()
        );
        assert!(
            ChunkParams {
                min: 8192,
                avg: 4096,
                max: 65536
            }
            .validate()
            .is_err()
        );
    }
}
