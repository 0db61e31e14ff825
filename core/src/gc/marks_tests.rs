use super::*;

fn ids(n: u32) -> Vec<ObjectId> {
    (0..n).map(|i| ObjectId::of(&i.to_le_bytes())).collect()
}

#[test]
fn marks_survive_compaction_and_nodes_are_visited_once() {
    let mut m = Marks::default();
    let ids = ids(200_000);
    for id in &ids {
        m.chunk(id).unwrap();
        m.chunk(id).unwrap();
    }
    m.seal().unwrap();
    assert_eq!(m.passes(), 1);
    assert!(ids.iter().all(|id| m.has_chunk(id)));
    assert!(!m.has_chunk(&ObjectId::of(b"other")));
    assert_eq!(m.counts().1, ids.len());
    assert!(m.node(ids[0]));
    assert!(!m.node(ids[0]));
    assert!(m.has_node(&ids[0]));
    // Marks added after sealing count too.
    let late = ObjectId::of(b"late");
    assert!(!m.has_chunk(&late));
    m.chunk(&late).unwrap();
    assert!(m.has_chunk(&late));
}

/// Marks over a small budget go to disk in runs and come back in parts:
/// every question gets the answer the marks in memory give, whether its
/// part is loaded or not, and a census loading parts in id order sees
/// each mark in exactly one part.
#[test]
fn spilled_marks_answer_as_marks_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let all = ids(50_000);
    let (marked, unmarked) = all.split_at(30_000);
    let mut memory = Marks::default();
    // 4,096 marks in memory at most: several runs, then 8 parts or so.
    let mut disk = Marks::with_budget(4096 * 8, Some(dir.path().into()));
    for (i, id) in marked.iter().enumerate() {
        memory.chunk(id).unwrap();
        disk.chunk(id).unwrap();
        // Shared chunks are marked again from other nodes.
        if i % 3 == 0 {
            disk.chunk(&marked[i / 2]).unwrap();
        }
    }
    memory.seal().unwrap();
    disk.seal().unwrap();
    assert_eq!(memory.passes(), 1);
    assert!(disk.passes() >= 8, "{} passes", disk.passes());
    assert_eq!(disk.counts(), memory.counts());
    assert!(disk.state_bytes() <= 4096 * 8 * 2, "{}", disk.state_bytes());
    // Files in a private directory of their own.
    let made: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert_eq!(made.len(), 1);
    let meta = std::fs::metadata(made[0].path()).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o700
    );
    // Questions from the files (no part loaded).
    for id in &all {
        assert_eq!(disk.has_chunk(id), memory.has_chunk(id), "{id}");
    }
    // A census in id order: each part loaded once, answers unchanged.
    let mut sorted = all.clone();
    sorted.sort();
    let mut loads = 0;
    let mut last = None;
    for id in &sorted {
        disk.load_for(id).unwrap();
        if disk.loaded != last {
            loads += 1;
            last = disk.loaded;
        }
        assert_eq!(disk.has_chunk(id), memory.has_chunk(id), "{id}");
        // A question outside the loaded part reads the files.
        let other = unmarked[id.as_bytes()[0] as usize];
        assert_eq!(disk.has_chunk(&other), memory.has_chunk(&other));
    }
    assert_eq!(loads, disk.passes());
    assert!(disk.read_error().is_none());
    // Late marks count in both.
    disk.chunk(&unmarked[0]).unwrap();
    assert!(disk.has_chunk(&unmarked[0]) && disk.has_late(&unmarked[0]));
    // Dropped, the directory goes.
    drop(disk);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn no_marks_spill_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Marks::with_budget(64, Some(dir.path().into()));
    m.seal().unwrap();
    assert_eq!(m.passes(), 1);
    assert!(!m.has_chunk(&ObjectId::of(b"x")));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Late marks are held up to [`LATE_CAP`]: past it the marks say so, and
/// the sweep's look holds it (a new VM's first backup committed while a
/// sweep deletes grew the set without bound: review 106.2).
#[test]
fn late_marks_past_the_cap_overflow_instead_of_growing() {
    let mut m = Marks::default();
    m.seal().unwrap();
    let n = LATE_CAP as u32;
    for i in 0..n {
        m.chunk(&ObjectId::of(&i.to_le_bytes())).unwrap();
    }
    assert!(!m.late_overflowed());
    m.chunk(&ObjectId::of(b"one more")).unwrap();
    assert!(m.late_overflowed());
    assert_eq!(m.late.len(), LATE_CAP);
}
