//! The HTTP listener's framing guard reads every byte a client sends before hyper does.
//! Whatever the bytes, it must not panic, and its verdict must not depend on how the
//! stream was cut into reads (the first input byte picks the cuts).
#![no_main]
use libfuzzer_sys::fuzz_target;
use warden_http::guard::{Poison, Tracker};

fn verdict(chunks: &[&[u8]]) -> Option<&'static str> {
    let poison = Poison::default();
    let mut t = Tracker::new(poison.clone());
    for c in chunks {
        t.feed(c);
    }
    poison.get()
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 17) + 1;
    let chunks: Vec<&[u8]> = stream.chunks(step).collect();
    assert_eq!(verdict(&chunks), verdict(&[stream]));
});
