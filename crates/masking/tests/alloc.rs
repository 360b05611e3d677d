//! Text without detections is returned borrowed, with no allocation at all (after the
//! per-thread caches are warm).

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::cell::Cell;

use warden_masking::*;

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts calls on the current thread.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn no_allocation_when_nothing_matches() {
    let config = MaskingConfig {
        rules: vec![MaskRule {
            connections: vec!["*".into()],
            detectors: DetectorName::BUILTIN.to_vec(),
            operator: Operator::Partial,
            fields: vec![],
        }],
        ..Default::default()
    };
    let conn = Masker::new(&config).unwrap().for_connection("c").unwrap();
    // Plenty of candidates (digit runs, `@`, `=`, `:`, `-`, `+`, upper case), no detection.
    let text = "2026-11-27T10:15:30.123Z INFO request_id=550e8400-e29b-41d4-a716-446655440000 \
                order 4111111111111112 user@localhost +1 23 password is required ORD-2026-000123 \
                v1.2.3 std::vector 999.1.1.1 AKIA-short eyJ.x sk-learn https://example.com/x\n"
        .repeat(50);
    let mut stats = MaskStats::default();
    for _ in 0..2 {
        assert!(matches!(
            conn.mask_text(&text, &mut stats),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            conn.mask_bytes(text.as_bytes(), &mut stats),
            Cow::Borrowed(_)
        ));
    }
    let before = ALLOCS.with(Cell::get);
    for _ in 0..10 {
        assert!(matches!(
            conn.mask_text(&text, &mut stats),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            conn.mask_bytes(text.as_bytes(), &mut stats),
            Cow::Borrowed(_)
        ));
    }
    assert_eq!(ALLOCS.with(Cell::get) - before, 0);
    assert_eq!(stats.total(), 0);
}
