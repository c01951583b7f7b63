//! The memory a [`Masker`] takes for its secrets, counted by the allocator of this test binary
//! (its own process, so no other test's allocations are counted).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use raibid_agent::Masker;

/// Counts the bytes allocated and not yet freed, and the most there were at once.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let grown = new_size - layout.size();
                let live = LIVE.fetch_add(grown, Ordering::Relaxed) + grown;
                PEAK.fetch_max(live, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One measurement at a time: the counters are global.
static SERIAL: Mutex<()> = Mutex::new(());

/// Reproducible pseudo-random numbers below `n`.
fn seeded(seed: u64) -> impl FnMut(usize) -> usize {
    let mut rng = fastrand::Rng::with_seed(seed);
    move |n: usize| rng.usize(..n)
}

const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `count` distinct secrets of about `size` bytes: one line of base64, or a PEM-like key of
/// 64-character lines (each of which the masker also masks on its own).
fn secrets(count: usize, size: usize, pem: bool) -> Vec<String> {
    let mut next = seeded(0x0123_4567_89AB_CDEF ^ (count * 31 + size) as u64);
    let mut random =
        |n: usize| -> String { (0..n).map(|_| BASE64[next(BASE64.len())] as char).collect() };
    (0..count)
        .map(|_| {
            if !pem {
                return random(size);
            }
            let mut key = String::from("-----BEGIN PRIVATE KEY-----\n");
            let end = "-----END PRIVATE KEY-----\n";
            while key.len() + end.len() < size {
                let line = 64.min(size - key.len() - end.len()).max(1);
                key.push_str(&random(line));
                key.push('\n');
            }
            key.push_str(end);
            key
        })
        .collect()
}

/// The bytes a masker holding `secrets` keeps once it is ready to mask, and the most it
/// allocated on the way.
fn measure(secrets: &[String]) -> (usize, usize) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let mut m = Masker::default();
    for s in secrets {
        m.add_secret(s);
    }
    // The automata are built on the first write.
    let out = m.push(b"\n");
    drop(out);
    let kept = LIVE.load(Ordering::Relaxed) - base;
    let peak = PEAK.load(Ordering::Relaxed) - base;
    drop(m);
    (kept, peak)
}

/// The memory of the masker for N secrets of S bytes, printed, never asserted:
/// `cargo test -p raibid-agent --release --test masker_memory -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, run by hand"]
fn masker_memory_by_number_and_size_of_secrets() {
    println!("| secrets | kind | secret bytes | kept | peak while built |");
    println!("|---|---|---|---|---|");
    for pem in [false, true] {
        for (count, size) in [(1, 4096), (10, 4096), (50, 4096), (100, 64), (100, 4096)] {
            let s = secrets(count, size, pem);
            let total: usize = s.iter().map(String::len).sum();
            let (kept, peak) = measure(&s);
            println!(
                "| {count} × {size} B | {} | {:.1} KiB | {:.1} MiB | {:.1} MiB |",
                if pem { "PEM-like" } else { "one line" },
                total as f64 / 1024.0,
                kept as f64 / (1 << 20) as f64,
                peak as f64 / (1 << 20) as f64,
            );
        }
    }
}

/// The masker's memory is bounded: at most 4 MiB for a DFA of its secrets (fast, for a few
/// keys and tokens), past that a few dozen bytes per byte of secret, however many there are
/// and whether they are single lines or keys whose lines are masked on their own too. It used
/// to be a DFA for up to 100 strings whatever their length (108 MiB for 50 single-line secrets
/// of 4 KiB), and a hand-written trie of what to hold back, a heap allocation per node, beside
/// the matcher (21 MiB kept and 64 MiB while built for 50 keys of 4 KiB).
#[test]
fn the_maskers_memory_is_bounded() {
    const DFA: usize = 4 << 20;
    for pem in [false, true] {
        for (count, size) in [(1, 4096), (100, 64), (50, 4096)] {
            let s = secrets(count, size, pem);
            let total: usize = s.iter().map(String::len).sum();
            let (kept, peak) = measure(&s);
            let kind = if pem { "keys" } else { "single-line secrets" };
            assert!(
                kept <= DFA + 64 * total,
                "{count} {kind}: {kept} bytes kept for {total} bytes of secrets"
            );
            assert!(
                peak <= DFA + 192 * total,
                "{count} {kind}: {peak} bytes allocated at once for {total} bytes of secrets"
            );
        }
    }
}
