use super::*;

fn pack(k: u8, age_days: i64, live: u64, dead: u64, live_chunks: u64) -> PackUse {
    PackUse {
        name: ObjectId::from_bytes([k; 32]),
        age: Duration::days(age_days),
        live_bytes: live,
        dead_bytes: dead,
        live_chunks,
    }
}

#[test]
fn each_pack_gets_the_fate_its_use_class_and_age_give() {
    use PackFate::*;
    use WasteReason::*;
    let none = BTreeMap::new();
    let standard = class_rules("STANDARD", &none);
    let ia = class_rules("STANDARD_IA", &none);
    let deep = class_rules("DEEP_ARCHIVE", &none);
    // (rules, age in days, live, dead, live chunks, max waste %, fate)
    let table = [
        (standard, 0, 100, 0, 3, 25, Keep),
        (standard, 0, 0, 100, 0, 25, Delete),
        (deep, 0, 0, 100, 0, 25, Delete),
        (standard, 0, 75, 25, 2, 25, KeepWaste(BelowThreshold)),
        (standard, 0, 74, 26, 2, 25, Repack),
        (ia, 29, 10, 90, 1, 25, KeepWaste(TooYoung)),
        (ia, 30, 10, 90, 1, 25, Repack),
        (deep, 365, 10, 90, 1, 25, KeepWaste(ArchiveClass)),
        (
            class_rules("GLACIER_IR", &none),
            365,
            10,
            90,
            1,
            25,
            KeepWaste(ArchiveClass),
        ),
        (standard, 0, 10, 90, 1, 95, KeepWaste(BelowThreshold)),
    ];
    for (i, (rules, age, live, dead, chunks, max, fate)) in table.into_iter().enumerate() {
        let p = plan(&[pack(1, age, live, dead, chunks)], rules, max);
        assert_eq!(p.fates[0].1, fate, "row {i}");
    }
}

#[test]
fn the_plan_reports_what_it_frees_moves_and_leaves() {
    let rules = class_rules("STANDARD", &BTreeMap::new());
    let packs = [
        pack(1, 0, 0, 1000, 0),  // deleted
        pack(2, 0, 300, 700, 1), // repacked
        pack(3, 0, 900, 100, 9), // 10% waste kept
        pack(4, 0, 500, 0, 5),   // whole
    ];
    let p = plan(&packs, rules, DEFAULT_MAX_WASTE_PCT);
    assert_eq!(p.deleted_bytes, 1700);
    assert_eq!(p.moved_bytes, 300);
    assert_eq!(p.waste_left_bytes, 100);
}

#[test]
fn a_repository_setting_overrides_a_class_minimum() {
    let overrides = BTreeMap::from([("STANDARD_IA".to_string(), 0u32)]);
    assert_eq!(
        class_rules("STANDARD_IA", &overrides).min_storage,
        Duration::zero()
    );
    assert_eq!(
        class_rules("DEEP_ARCHIVE", &BTreeMap::new()).min_storage,
        Duration::days(180)
    );
    assert!(
        !class_rules("", &BTreeMap::new()).archive,
        "a local directory is hot"
    );
}

#[test]
fn use_is_counted_from_the_trailer() {
    let e = |k: u8, len: u32| PackEntry {
        id: ObjectId::from_bytes([k; 32]),
        offset: 0,
        stored_len: len,
        plain_len: len,
    };
    let entries = [e(1, 10), e(2, 20), e(3, 30)];
    let u = PackUse::of(
        ObjectId::from_bytes([9; 32]),
        Duration::zero(),
        &entries,
        |id| id.as_bytes()[0] != 2,
    );
    assert_eq!((u.live_bytes, u.dead_bytes, u.live_chunks), (40, 20, 2));
    assert!((u.waste_pct() - 100.0 / 3.0).abs() < 1e-9);
}
