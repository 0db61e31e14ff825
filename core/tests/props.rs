//! Property tests for the laws the format relies on.

use std::collections::BTreeMap;

use proptest::prelude::*;
use xfull_core::backup::segment::chunk_segment;
use xfull_core::changes::parse::parse_changes;
use xfull_core::chunker::{ChunkParams, for_each_chunk};
use xfull_core::config::RepoConfig;
use xfull_core::frame::{self, Kind};
use xfull_core::gc::markers::SweepState;
use xfull_core::id::ObjectId;
use xfull_core::lease::LeaseRecord;
use xfull_core::manifest::{BackupStats, DiskManifest, Manifest};
use xfull_core::node::{Entry, Node};
use xfull_core::point_spec::PointSpec;
use xfull_core::prune::span::Span;
use xfull_core::verify::Subset;

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
        let a = chunk_segment(&small(), &input);
        let b = chunk_segment(&small(), &input);
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
        let all = chunk_segment(&small(), &input);
        if all.offsets.is_empty() {
            return Ok(());
        }
        let i = cut.index(all.offsets.len());
        let start = all.offsets[i];
        let tail = chunk_segment(&small(), &input[start..]);
        prop_assert_eq!(&tail.entries[..], &all.entries[i..]);
    }

    #[test]
    fn nodes_round_trip(entries in prop::collection::vec(
        (1u32..u32::MAX, prop::option::of(any::<[u8; 32]>())), 0..200)) {
        let node = Node {
            entries: entries.into_iter().map(|(l, id)| Entry(l, id.map(ObjectId::from_bytes))).collect(),
        };
        let (id, plain) = node.to_plain().unwrap();
        let framed = frame::encode(Kind::Node, &plain, 3).unwrap();
        prop_assert_eq!(Node::decode(&id, &framed, 16 << 20).unwrap(), node);
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
        let segments = (0..n)
            .map(|i| (((seed >> (i % 64)) & 1) == 1).then(|| ObjectId::of(&i.to_le_bytes())))
            .collect();
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
                source: "full-scan".into(),
                parent: None,
                audit: Some(xfull_core::manifest::Audit { segments: 3, mismatch_at: Some(size / 2) }),
                stats: BackupStats { bytes_read, ..Default::default() },
            }],
            stats: BackupStats::default(),
            writer: "t".into(),
        };
        let framed = m.encode().unwrap();
        prop_assert_eq!(Manifest::decode("k", &framed).unwrap(), m);
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let id = ObjectId::of(&bytes);
        for kind in [Kind::Config, Kind::Chunk, Kind::Node, Kind::Manifest] {
            let _ = frame::decode(kind, "k", &bytes, 1 << 16);
        }
        let _ = frame::decode_chunk("k", &bytes, 100);
        let _ = Node::decode(&id, &bytes, 1 << 20);
        let _ = Manifest::decode("k", &bytes);
        let _ = RepoConfig::decode(&bytes);
        let _ = LeaseRecord::decode("leases/k", &bytes);
        let _ = SweepState::decode("gc/done/k", &bytes);
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
            let errors = [
                RepoConfig::decode(&framed).err(),
                Node::decode(&ObjectId::of(&bytes), &framed, 1 << 20).err(),
                Manifest::decode("points/v/k", &framed).err(),
                LeaseRecord::decode("leases/k", &framed).err(),
                SweepState::decode("gc/done/k", &framed).err(),
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
        let (id, plain) = node.to_plain().unwrap();
        let mut framed = frame::encode(Kind::Node, &plain, 3).unwrap();
        let i = flip.index(framed.len());
        framed[i] ^= 1 << bit;
        if let Ok(got) = Node::decode(&id, &framed, 16 << 20) {
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
