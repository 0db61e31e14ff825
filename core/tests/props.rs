//! Property tests for the laws the format relies on.

use std::collections::BTreeMap;

use proptest::prelude::*;
use xfull_core::backup::segment::chunk_segment;
use xfull_core::changes::parse::parse_changes;
use xfull_core::chunker::{ChunkParams, for_each_chunk};
use xfull_core::codec::Codec;
use xfull_core::config::RepoConfig;
use xfull_core::frame::{self, Kind};
use xfull_core::gc::markers::SweepState;
use xfull_core::id::ObjectId;
use xfull_core::lease::LeaseRecord;
use xfull_core::manifest::{BackupStats, DiskManifest, Manifest, ManifestSummary, limits};
use xfull_core::node::{Entry, Node};
use xfull_core::point_spec::PointSpec;
use xfull_core::prune::span::Span;
use xfull_core::verify::Subset;

/// Counts every allocation of this test binary, so properties can bound
/// what a decoder allocates (see `within`).
#[global_allocator]
static ALLOC: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

fn cfg(segment_size: u64) -> RepoConfig {
    RepoConfig::new(segment_size, ChunkParams::default(), 3).unwrap()
}

fn small() -> ChunkParams {
    ChunkParams {
        min: 256,
        avg: 1024,
        max: 4096,
    }
}

/// Data with structure: runs of random bytes, zeros and repeats.
fn data() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..3000),
            (0usize..6000).prop_map(|n| vec![0u8; n]),
            (any::<u8>(), 0usize..3000).prop_map(|(b, n)| vec![b; n]),
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn chunks_reassemble_to_the_input(input in data()) {
        let p = small();
        let mut out = Vec::new();
        let mut last_end = 0;
        let mut lens = Vec::new();
        for_each_chunk(&p, &input, |off, len| {
            assert_eq!(off, last_end, "chunks are contiguous");
            last_end = off + len;
            out.extend_from_slice(&input[off..off + len]);
            lens.push(len);
        });
        prop_assert_eq!(&out, &input);
        // Every chunk but the last respects the limits.
        if let Some((_, body)) = lens.split_last() {
            for &l in body {
                prop_assert!(l >= p.min as usize && l <= p.max as usize, "len {}", l);
            }
        }
    }

    #[test]
    fn chunking_is_deterministic(input in data()) {
        let a = chunk_segment(&small(), &Codec::plain(), &input);
        let b = chunk_segment(&small(), &Codec::plain(), &input);
        prop_assert_eq!(&a.entries, &b.entries);
        // Zero entries are exactly the all-zero chunks, and ids hash content.
        for (e, &off) in a.entries.iter().zip(&a.offsets) {
            let piece = &input[off..off + e.len() as usize];
            match e.chunk() {
                None => prop_assert!(piece.iter().all(|&x| x == 0)),
                Some(id) => prop_assert_eq!(id, ObjectId::of(piece)),
            }
        }
        prop_assert_eq!(a.entries.iter().map(|e| e.len()).sum::<u64>(), input.len() as u64);
    }

    #[test]
    fn a_chunk_boundary_restarts_chunking(input in data(), cut in any::<prop::sample::Index>()) {
        // Cut points depend only on the bytes since the previous cut: chunking
        // from any boundary reproduces the rest of the boundaries. Incremental
        // re-chunking relies on this.
        let all = chunk_segment(&small(), &Codec::plain(), &input);
        if all.offsets.is_empty() {
            return Ok(());
        }
        let i = cut.index(all.offsets.len());
        let start = all.offsets[i];
        let tail = chunk_segment(&small(), &Codec::plain(), &input[start..]);
        prop_assert_eq!(&tail.entries[..], &all.entries[i..]);
    }

    #[test]
    fn nodes_round_trip(entries in prop::collection::vec(
        (1u32..=80_000, prop::option::of(any::<[u8; 32]>())), 0..200)) {
        // Up to 200 entries of up to 80 000 bytes: within a 16 MiB segment.
        let node = Node {
            entries: entries.into_iter().map(|(l, id)| Entry(l, id.map(ObjectId::from_bytes))).collect(),
        };
        let (id, plain) = node.to_plain(&Codec::plain()).unwrap();
        let framed = frame::encode(Kind::Node, &plain, 3).unwrap();
        prop_assert_eq!(Node::decode(&id, &framed, &cfg(16 << 20), &Codec::plain()).unwrap(), node);
    }

    #[test]
    fn manifests_round_trip(
        size in 0u64..(1 << 40),
        labels in prop::collection::btree_map("[a-z]{1,8}", ".{0,20}", 0..4),
        seed in any::<u64>(),
        bytes_read in any::<u64>(),
    ) {
        let seg = 64u64 << 20;
        let n = size.div_ceil(seg).min(5000) as usize;
        let size = size.min(n as u64 * seg);
        let segments: Vec<_> = (0..n)
            .map(|i| (((seed >> (i % 64)) & 1) == 1).then(|| ObjectId::of(&i.to_le_bytes())))
            .collect();
        // Marks on every other seed: a point written before marks has none.
        let last_data = match seed % 2 {
            0 => Vec::new(),
            _ => segments.iter().enumerate().map(|(i, s)| match s {
                Some(_) => (seed ^ i as u64) % (seg.min(size - i as u64 * seg)) + 1,
                None => 0,
            }).collect(),
        };
        let m = Manifest {
            vm: "vm-1".parse().unwrap(),
            id: "20261125T194155Z-3fa2".parse().unwrap(),
            time: "2026-11-25T19:41:55Z".parse().unwrap(),
            created: "2026-11-25T19:41:55.5Z".parse().unwrap(),
            parent: Some("20261124T194155Z-0001".parse().unwrap()),
            host: "h".into(),
            labels: labels.into_iter().collect::<BTreeMap<_, _>>(),
            disks: vec![DiskManifest {
                name: "d".parse().unwrap(),
                size,
                segment_size: seg,
                segments,
                last_data,
                source: "full-scan".into(),
                parent: None,
                audit: Some(xfull_core::manifest::Audit { segments: 3, mismatch_at: Some(size / 2) }),
                stats: BackupStats { bytes_read, ..Default::default() },
                checkpoint: None,
                lock_generation: None,
            }],
            stats: BackupStats::default(),
            writer: "t".into(),
        };
        let framed = m.encode().unwrap();
        prop_assert_eq!(Manifest::decode("k", &framed, &cfg(seg)).unwrap(), m);
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let id = ObjectId::of(&bytes);
        for kind in [Kind::Config, Kind::Chunk, Kind::Node, Kind::Manifest] {
            let _ = frame::decode(kind, "k", &bytes, 1 << 16);
        }
        let _ = frame::decode_chunk("k", &bytes, 100);
        let c = cfg(1 << 20);
        let _ = Node::decode(&id, &bytes, &c, &Codec::plain());
        let _ = Manifest::decode("k", &bytes, &c);
        let _ = ManifestSummary::decode("k", &bytes, &c);
        let _ = RepoConfig::decode(&bytes);
        let _ = LeaseRecord::decode("leases/k", &bytes, &Codec::plain());
        let _ = SweepState::decode("gc/done/k", &bytes, &Codec::plain());
        let _ = parse_changes("f.json", &bytes, 1 << 30);
        let text = String::from_utf8_lossy(&bytes);
        let _ = Span::parse(&text);
        let _ = Subset::parse(&text);
        let _ = text.parse::<PointSpec>();
    }

    #[test]
    fn decoders_refuse_well_framed_nonsense(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        // A valid frame around arbitrary bytes: the content decoders must
        // refuse it with an error that names the object, not panic.
        for kind in [Kind::Config, Kind::Node, Kind::Manifest, Kind::Lease, Kind::Marker] {
            let framed = frame::encode(kind, &bytes, 3).unwrap();
            let c = cfg(1 << 20);
            let errors = [
                RepoConfig::decode(&framed).err(),
                Node::decode(&ObjectId::of(&bytes), &framed, &c, &Codec::plain()).err(),
                Manifest::decode("points/v/k", &framed, &c).err(),
                ManifestSummary::decode("points/v/k", &framed, &c).err(),
                LeaseRecord::decode("leases/k", &framed, &Codec::plain()).err(),
                SweepState::decode("gc/done/k", &framed, &Codec::plain()).err(),
            ];
            for e in errors.into_iter().flatten() {
                prop_assert!(!e.to_string().is_empty());
            }
        }
        // JSON that is not an extent list names the file.
        if let Err(e) = parse_changes("changes.json", &bytes, 1 << 30) {
            prop_assert!(e.to_string().contains("changes.json"), "{}", e);
        }
    }

    #[test]
    fn decoders_never_panic_on_damaged_objects(flip in any::<prop::sample::Index>(), bit in 0u8..8) {
        // Valid objects with one bit flipped: a clear error, never a panic,
        // and never different content (a flip in a zstd header field that
        // does not change the output may decode to the same object).
        let node = Node { entries: vec![Entry(4096, Some(ObjectId::of(b"x"))), Entry(10, None)] };
        let (id, plain) = node.to_plain(&Codec::plain()).unwrap();
        let mut framed = frame::encode(Kind::Node, &plain, 3).unwrap();
        let i = flip.index(framed.len());
        framed[i] ^= 1 << bit;
        if let Ok(got) = Node::decode(&id, &framed, &cfg(16 << 20), &Codec::plain()) {
            prop_assert_eq!(got, node);
        }
        let cfg = RepoConfig::new(16 << 20, ChunkParams::default(), 3).unwrap();
        let mut framed = cfg.encode().unwrap();
        let i = flip.index(framed.len());
        framed[i] ^= 1 << bit;
        if let Ok(got) = RepoConfig::decode(&framed) {
            prop_assert_eq!(got, cfg);
        }
    }
}

/// Runs `f` allowed at most `bound` more bytes of heap. The limit is
/// process-wide: one bounded run at a time, and slack for the other tests
/// of this binary running meanwhile (a few MB). Past the limit the
/// allocation fails and the test binary aborts.
fn within<T>(bound: usize, f: impl FnOnce() -> T) -> T {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    struct Unlimit;
    impl Drop for Unlimit {
        fn drop(&mut self) {
            let _ = ALLOC.set_limit(usize::MAX);
        }
    }
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let slack = 32 << 20;
    ALLOC
        .set_limit(ALLOC.allocated() + bound + slack)
        .expect("limit above what is allocated");
    let _unlimit = Unlimit;
    f()
}

/// What a crafted manifest's one disk declares.
#[derive(Clone, Debug)]
struct Hostile {
    /// The repository's segment size.
    seg: u64,
    size: u64,
    segment_size: u64,
    /// Segments listed: ids and nulls when few, a run of nulls when many.
    count: u64,
    /// More copies of the disk, under other names.
    extra_disks: u32,
    labels: u32,
}

impl Hostile {
    /// Whether a reader must accept it.
    fn valid(&self) -> bool {
        self.segment_size == self.seg
            && self.size <= limits::MAX_DISK_SIZE
            && self.count == self.size.div_ceil(self.seg)
            && self.extra_disks == 0
            && self.labels as usize <= limits::MAX_LABELS
    }

    /// Its CBOR plaintext, and the manifest when it is small enough to be
    /// built as one (the others are spliced: runs of nulls, copies).
    fn plaintext(&self) -> (Vec<u8>, Option<Manifest>) {
        let few = self.count <= 10_000;
        let mut m = hostile_base(self.size, self.segment_size);
        m.labels = (0..self.labels.min(100))
            .map(|i| (format!("k{i}"), format!("v{i}")))
            .collect();
        if few {
            m.disks[0].segments = (0..self.count)
                .map(|i| (i % 3 == 0).then(|| ObjectId::of(&i.to_le_bytes())))
                .collect();
        }
        let mut plain = cbor(&m);
        if !few {
            // Splice a run of `count` nulls where the empty list is.
            let at = find(&plain, b"\x68segments\x80") + 9;
            let mut run = vec![0x9b];
            run.extend_from_slice(&self.count.to_be_bytes());
            run.resize(run.len() + self.count as usize, 0xf6);
            plain.splice(at..at + 1, run);
        }
        if self.extra_disks > 0 {
            assert!(few, "copies are of a disk with few segments");
            // The disk list: one disk, then copies of it under new names.
            let at = find(&plain, b"\x65disks\x81") + 6;
            let one = cbor(&m.disks[0]);
            let n = 1 + self.extra_disks as usize;
            let mut disks = vec![0x9a];
            disks.extend_from_slice(&(n as u32).to_be_bytes());
            let end = at + 1 + one.len();
            let first = plain[at + 1..end].to_vec();
            disks.extend_from_slice(&first);
            for i in 1..n {
                let mut d = first.clone();
                let name = find(&d, b"\x64name\x61d") + 5;
                d.splice(name..name + 2, cbor(&format!("d{i:07}")));
                disks.extend_from_slice(&d);
            }
            plain.splice(at..end, disks);
        }
        (plain, (few && self.extra_disks == 0).then_some(m))
    }
}

fn hostile_base(size: u64, segment_size: u64) -> Manifest {
    Manifest {
        vm: "v".parse().unwrap(),
        id: "20261125T194155Z-3fa2".parse().unwrap(),
        time: "2026-11-25T19:41:55Z".parse().unwrap(),
        created: "2026-11-25T19:41:55Z".parse().unwrap(),
        parent: None,
        host: "h".into(),
        labels: BTreeMap::new(),
        disks: vec![DiskManifest {
            name: "d".parse().unwrap(),
            size,
            segment_size,
            segments: Vec::new(),
            last_data: Vec::new(),
            source: "full-scan".into(),
            parent: None,
            audit: None,
            stats: BackupStats::default(),
            checkpoint: None,
            lock_generation: None,
        }],
        stats: BackupStats::default(),
        writer: "t".into(),
    }
}

fn cbor<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).unwrap();
    out
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap()
}

fn hostile() -> impl Strategy<Value = Hostile> {
    let seg = prop::sample::select(vec![1u64 << 20, 4 << 20, 16 << 20, 64 << 20]);
    (
        seg,
        any::<prop::sample::Index>(),
        any::<u64>(),
        0u8..8,
        0u8..10,
        0u8..10,
        0u8..8,
    )
        .prop_map(
            |(seg, pick, random, size_kind, seg_kind, count_kind, shape)| {
                let size = match size_kind {
                    0 => 0,
                    1 => random % (seg * 40),
                    2 => limits::MAX_DISK_SIZE,
                    3 => limits::MAX_DISK_SIZE + 1,
                    4 => 1 << 63,
                    5 => u64::MAX,
                    6 => 1 << 40,
                    _ => random,
                };
                let segment_size = match seg_kind {
                    0 => 1000,
                    1 => 3000,
                    2 => 1 << 40,
                    3 => 1 << 63,
                    4 => 0,
                    5 => random | 1,
                    _ => seg,
                };
                let right = size
                    .checked_div(segment_size)
                    .map(|_| size.div_ceil(segment_size.max(1)));
                let count = match (count_kind, right) {
                    (0..=5, Some(n)) if n <= 10_000 => n,
                    (6, Some(n)) if n <= 10_000 => n + 1,
                    (7, Some(n)) if (1..=10_000).contains(&n) => n - 1,
                    // A run of nulls far longer than the bound below allows
                    // holding as ids (33 bytes each).
                    _ => 2_000_000 + pick.index(3_000_000) as u64,
                };
                let (extra_disks, labels) = match shape {
                    0 => (limits::MAX_DISKS as u32, 0),
                    1 => (200_000, 0),
                    2 => (0, limits::MAX_LABELS as u32 + 1),
                    3 => (0, 100),
                    _ => (0, pick.index(4) as u32),
                };
                // Copies of a disk are of a small one.
                let count = if extra_disks > 0 { count.min(3) } else { count };
                Hostile {
                    seg,
                    size,
                    segment_size,
                    count,
                    extra_disks,
                    labels,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn hostile_manifests_are_refused_within_bounded_memory(h in hostile()) {
        let (plain, built) = h.plaintext();
        let framed = frame::encode(Kind::Manifest, &plain, 3).unwrap();
        drop(plain);
        let cfg = cfg(h.seg);
        // A valid manifest's ids, 33 bytes each in memory, are all that a
        // decode may hold beyond the slack; a hostile one gets nothing.
        let bound = if h.valid() { 40 * h.count as usize } else { 0 };
        let (summary, full) = within(bound, || {
            (
                ManifestSummary::decode("points/v/k", &framed, &cfg),
                Manifest::decode("points/v/k", &framed, &cfg),
            )
        });
        if h.valid() {
            let m = full.unwrap();
            prop_assert_eq!(summary.unwrap().disks[0].segment_count, h.count);
            if let Some(built) = built {
                prop_assert_eq!(m, built);
            }
        } else {
            for e in [summary.err(), full.err()] {
                let e = e.expect("refused");
                prop_assert!(e.is_damage(), "{}", e);
                prop_assert!(e.to_string().contains("points/v/k"), "{}", e);
            }
        }
    }
}
