//! A flush whose data sync fails (a lost writeback): the overlay takes no
//! more writes or flushes, and its map on disk is never written after it
//! (review 104.3).

use super::*;

#[test]
fn after_a_failed_sync_no_write_or_flush_succeeds_and_the_map_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.overlay");
    let size = 4 * BLOCK;
    let ov = Overlay::open(&path, "vm@p", "d", size).unwrap();
    ov.write_at(&[7u8; BLOCK as usize], 0).unwrap();
    ov.mark(0, 0);
    ov.fail_next_sync.store(true, Ordering::SeqCst);
    assert!(ov.flush().is_err(), "the failed sync is reported");
    // Linux would now report success for a sync, the lost data included:
    // the next flush must not write the map.
    assert!(ov.flush().is_err(), "a later flush fails too");
    assert!(ov.write_at(&[1u8; 512], BLOCK).is_err());
    assert!(ov.punch(2 * BLOCK, BLOCK).is_err());
    drop(ov);
    let again = Overlay::open(&path, "vm@p", "d", size).unwrap();
    assert!(
        !again.has(0),
        "the block whose data was lost is not in the map"
    );
}
