//! Small records kept in memory compressed against earlier records of their kind.
//!
//! The memory backends keep hundreds of thousands of records of a few hundred bytes:
//! a report's result (for its duplicates) and an event (for resuming subscribers).
//! Records of one kind are nearly alike: the same summaries, the same policy texts
//! with a few values changed. Alone each compresses poorly (the texts occur once), but
//! against a dictionary learnt from earlier records zstd keeps little more than what
//! differs: about a sixth of the bytes at zstd's level 1 (319 B → 51 B on the loadgen
//! mix of results, measured once), a little more at the faster level used
//! (`LEVEL`); the tests here check under a third on synthetic records.
//!
//! A [`Compactor`] learns its dictionary from the first 128 KB of records it packs
//! (stored as they are until then) with zstd's trainer, which also gives the entropy
//! tables of such records: packing one then builds none of its own (building them was
//! most of the cost). It learns a new one when the records stop resembling it (a policy
//! reload, a new traffic mix). Every dictionary it made stays, so that anything packed
//! with it can be unpacked; their number is bounded ([`MAX_DICTIONARIES`]).
//!
//! The price is CPU on the report path: under a microsecond per record on its own, and
//! about a tenth of `ReportOutcome` throughput on one core with the result and the
//! event both packed (docs/performance.md, "Memory with the default caps").
//!
//! This module owns only the packing (a value's postcard bytes in, packed bytes out):
//! it knows nothing of what the records mean, and never decides what is kept.

use parking_lot::{Mutex, RwLock};
use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The size of a dictionary.
const DICTIONARY_BYTES: usize = 16 * 1024;
/// How much of the first records a dictionary is learnt from (the loadgen mix: about
/// 400 records).
const SAMPLE_BYTES: usize = 128 * 1024;
/// Dictionaries a compactor makes at most (each ~100 KB prepared); past that, the last
/// one stays in use.
pub const MAX_DICTIONARIES: usize = 16;
/// Records between two looks at how well the current dictionary does.
const REVIEW_EVERY: u64 = 8192;
/// A dictionary is replaced when it leaves records above this share of their size.
const REFRESH_ABOVE: f64 = 0.45;
/// A fast negative level: the dictionary does most of the work, and the match search
/// is most of what is left to pay. Measured on the loadgen mix (1,000,000 destinations,
/// default caps; `ReportOutcome` on one core): level 1 took 215.5 MB and 30,027
/// requests/s, -4 took 223.2 MB and 33,215 (+10.6 %), -7 took 234.0 MB for no more
/// speed. At negative levels zstd also leaves literals unencoded.
const LEVEL: i32 = -4;

/// The first byte of a packed record: `RAW`, or the number of the dictionary.
const RAW: u8 = 0;

/// A packed record that cannot be unpacked (a bug: only [`Compactor::pack`] makes them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot unpack a kept record: {0}")]
pub struct UnpackError(String);

/// Records set aside to learn a dictionary from: their bytes end to end, and sizes.
type Sample = (Vec<u8>, Vec<usize>);

/// A dictionary trained on the sample (zstd's trainer: the common content, and the
/// entropy tables of such records, so that packing one does not build its own); when
/// the trainer declines (too few or too alike records), the newest records as they are.
fn make_dictionary(bytes: &[u8], sizes: &[usize]) -> Option<Dictionary> {
    let mut trained: Vec<u8> = Vec::with_capacity(DICTIONARY_BYTES);
    let content = match zstd_safe::train_from_buffer(&mut trained, bytes, sizes) {
        Ok(_) => &trained[..],
        // The newest records last: zstd reaches them with the shortest offsets.
        Err(_) => &bytes[bytes.len().saturating_sub(DICTIONARY_BYTES)..],
    };
    Some(Dictionary {
        compress: zstd_safe::CDict::try_create(content, LEVEL)?,
        decompress: zstd_safe::DDict::try_create(content)?,
    })
}

struct Dictionary {
    compress: zstd_safe::CDict<'static>,
    decompress: zstd_safe::DDict<'static>,
}

/// Packs and unpacks records of one kind. Cheap to share (`&self` everywhere).
pub struct Compactor {
    dictionaries: RwLock<Vec<Arc<Dictionary>>>,
    /// While set, packed records are also copied into `sample`, the next dictionary.
    learning: AtomicBool,
    sample: Mutex<Sample>,
    /// Since the last review: records packed, their size, their packed size.
    packed: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Default for Compactor {
    fn default() -> Self {
        Compactor {
            dictionaries: RwLock::default(),
            learning: AtomicBool::new(true),
            sample: Mutex::default(),
            packed: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for Compactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compactor")
            .field("dictionaries", &self.dictionaries.read().len())
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// One zstd context per thread and direction, reused (creating one allocates its
    /// work space).
    static COMPRESSOR: RefCell<zstd_safe::CCtx<'static>> = RefCell::new(zstd_safe::CCtx::create());
    static DECOMPRESSOR: RefCell<zstd_safe::DCtx<'static>> = RefCell::new(zstd_safe::DCtx::create());
    /// Where a record is compressed before its exact allocation is made.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Where [`Compactor::pack_value`] encodes a record.
    static RECORD: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Compactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// A compactor that packs when `on`, else keeps every record as it is (what the
    /// settings `store.compact_results` and `events.compact` choose).
    pub fn packing(on: bool) -> Self {
        if on { Self::new() } else { Self::off() }
    }

    /// A compactor that keeps every record as it is (the settings that turn packing
    /// off): unpacking still works the same.
    pub fn off() -> Self {
        // Never learning, it never has a dictionary: every record is kept raw.
        let off = Self::default();
        off.learning.store(false, Ordering::Relaxed);
        off
    }

    /// `prefix` followed by `value` (postcard) packed, in one allocation of the exact
    /// size; the encoding goes through a buffer reused by the thread.
    pub fn pack_value<T: serde::Serialize + ?Sized>(
        &self,
        prefix: &[u8],
        value: &T,
    ) -> Result<Vec<u8>, postcard::Error> {
        RECORD.with_borrow_mut(|record| {
            record.clear();
            let encoded = postcard::to_extend(value, std::mem::take(record))?;
            let packed = self.pack(prefix, &encoded);
            *record = encoded;
            Ok(packed)
        })
    }

    /// `prefix` followed by `record` packed, in one allocation of the exact size.
    pub fn pack(&self, prefix: &[u8], record: &[u8]) -> Vec<u8> {
        self.learn(record);
        let current = {
            let dictionaries = self.dictionaries.read();
            dictionaries
                .last()
                .map(|d| (Arc::clone(d), dictionaries.len()))
        };
        let raw = || {
            let mut out = Vec::with_capacity(prefix.len() + 1 + record.len());
            out.extend_from_slice(prefix);
            out.push(RAW);
            out.extend_from_slice(record);
            out
        };
        let Some((dictionary, number)) = current else {
            return raw();
        };
        let out = SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            scratch.reserve(zstd_safe::compress_bound(record.len()));
            let compressed = COMPRESSOR.with_borrow_mut(|cctx| {
                cctx.compress_using_cdict(scratch, record, &dictionary.compress)
            });
            // Records no smaller packed (or a zstd error, which cannot lose anything
            // here) are kept as they are.
            match compressed {
                Ok(n) if n < record.len() => {
                    let mut out = Vec::with_capacity(prefix.len() + 1 + n);
                    out.extend_from_slice(prefix);
                    // At most MAX_DICTIONARIES (16): fits.
                    out.push(u8::try_from(number).unwrap_or(u8::MAX));
                    out.extend_from_slice(scratch);
                    Some(out)
                }
                _ => None,
            }
        });
        let out = out.unwrap_or_else(raw);
        self.review(record.len(), out.len() - prefix.len());
        out
    }

    /// The record packed in `packed` (what follows the prefix given to [`pack`]).
    ///
    /// [`pack`]: Compactor::pack
    /// A record kept raw is borrowed, not copied.
    pub fn unpack<'a>(&self, packed: &'a [u8]) -> Result<Cow<'a, [u8]>, UnpackError> {
        let (&number, frame) = packed
            .split_first()
            .ok_or_else(|| UnpackError("empty".into()))?;
        if number == RAW {
            return Ok(Cow::Borrowed(frame));
        }
        let dictionary = self
            .dictionaries
            .read()
            .get(usize::from(number) - 1)
            .cloned()
            .ok_or_else(|| UnpackError(format!("no dictionary {number}")))?;
        let size = zstd_safe::get_frame_content_size(frame)
            .ok()
            .flatten()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| UnpackError("no content size".into()))?;
        let mut out = Vec::with_capacity(size);
        DECOMPRESSOR
            .with_borrow_mut(|dctx| {
                dctx.decompress_using_ddict(&mut out, frame, &dictionary.decompress)
            })
            .map_err(|code| UnpackError(zstd_safe::get_error_name(code).to_owned()))?;
        Ok(Cow::Owned(out))
    }

    /// How many dictionaries were made.
    pub fn dictionaries(&self) -> usize {
        self.dictionaries.read().len()
    }

    /// While learning, adds the record to the sample; a full sample becomes the next
    /// dictionary.
    fn learn(&self, record: &[u8]) {
        if !self.learning.load(Ordering::Relaxed) {
            return;
        }
        let mut sample = self.sample.lock();
        if !self.learning.load(Ordering::Relaxed) {
            return;
        }
        let (bytes, sizes) = &mut *sample;
        bytes.extend_from_slice(record);
        sizes.push(record.len());
        if bytes.len() < SAMPLE_BYTES {
            return;
        }
        // Trained outside the lock (tens of milliseconds, once): the other reports go on
        // packing with the dictionary they have.
        let (bytes, sizes) = std::mem::take(&mut *sample);
        self.learning.store(false, Ordering::Relaxed);
        drop(sample);
        let made = make_dictionary(&bytes, &sizes);
        if let Some(dictionary) = made {
            let mut dictionaries = self.dictionaries.write();
            if dictionaries.len() < MAX_DICTIONARIES {
                dictionaries.push(Arc::new(dictionary));
            }
        }
        self.packed.store(0, Ordering::Relaxed);
        self.bytes_in.store(0, Ordering::Relaxed);
        self.bytes_out.store(0, Ordering::Relaxed);
    }

    /// Every [`REVIEW_EVERY`] records: a dictionary that no longer shrinks records
    /// well is replaced by one learnt from the next records.
    fn review(&self, raw: usize, packed: usize) {
        let bytes_in = self.bytes_in.fetch_add(raw as u64, Ordering::Relaxed) + raw as u64;
        let bytes_out = self.bytes_out.fetch_add(packed as u64, Ordering::Relaxed) + packed as u64;
        if self.packed.fetch_add(1, Ordering::Relaxed) + 1 < REVIEW_EVERY {
            return;
        }
        self.packed.store(0, Ordering::Relaxed);
        self.bytes_in.store(0, Ordering::Relaxed);
        self.bytes_out.store(0, Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)] // a ratio
        let share = bytes_out as f64 / bytes_in.max(1) as f64;
        if share > REFRESH_ABOVE && self.dictionaries() < MAX_DICTIONARIES {
            self.learning.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize, text: &str) -> Vec<u8> {
        format!(
            "{{event {i:08x}-{:04}: {text} redial no earlier than 2026-12-05T11:{:02}:00Z, \
             attempt {} of 5}}",
            i * 7 % 10_000,
            i % 60,
            i % 5
        )
        .into_bytes()
    }

    const BUSY: &str = "Busy (486 Busy Here): the recipient's line was busy; we will try again";
    const DECLINED: &str = "Declined by the recipient (603 Decline): not redialled automatically; \
                            user notified, SMS or callback suggested";

    #[test]
    fn records_come_back_exactly_and_alike_ones_shrink() {
        let compactor = Compactor::new();
        let mut packed = Vec::new();
        for i in 0..2000 {
            let r = record(i, if i % 2 == 0 { BUSY } else { DECLINED });
            packed.push((r.clone(), compactor.pack(b"key", &r)));
        }
        assert_eq!(compactor.dictionaries(), 1);
        for (r, p) in &packed {
            assert_eq!(&p[..3], b"key");
            assert_eq!(&compactor.unpack(&p[3..]).expect("unpacks"), r);
        }
        // The first records are kept raw (no dictionary yet); later ones shrink.
        let (r, p) = &packed[1999];
        assert!(p.len() * 3 < r.len(), "{} of {}", p.len(), r.len());
        assert_eq!(packed[0].1.len(), 3 + 1 + packed[0].0.len());
    }

    #[test]
    fn records_unlike_the_dictionary_make_a_new_one_and_old_ones_still_unpack() {
        let compactor = Compactor::new();
        let first: Vec<_> = (0..1000)
            .map(|i| {
                let r = record(i, BUSY);
                (compactor.pack(&[], &r), r)
            })
            .collect();
        assert_eq!(compactor.dictionaries(), 1);
        // Another kind of record (a new policy's texts): reviewed, learnt again.
        let other = |i: usize| {
            format!(
                "[{i}] Ein ganz anderer Text, den das erste Wörterbuch nie gesehen hat: Nummer \
                 {} wurde {} Mal angerufen; Rückruf angeboten. {}",
                i * 31,
                i % 7,
                "Ende. ".repeat(i % 3)
            )
            .into_bytes()
        };
        for i in 0..(2 * REVIEW_EVERY as usize) {
            compactor.pack(&[], &other(i));
        }
        assert_eq!(compactor.dictionaries(), 2);
        let r = other(99_999);
        let p = compactor.pack(&[], &r);
        assert!(p.len() * 2 < r.len(), "{} of {}", p.len(), r.len());
        assert_eq!(compactor.unpack(&p).expect("new"), r);
        for (p, r) in &first {
            assert_eq!(&compactor.unpack(p).expect("old"), r);
        }
    }

    #[test]
    fn off_keeps_records_as_they_are() {
        let compactor = Compactor::off();
        for i in 0..4000 {
            let r = record(i, BUSY);
            let p = compactor.pack(b"k", &r);
            assert_eq!(p.len(), 1 + 1 + r.len());
            assert_eq!(compactor.unpack(&p[1..]).expect("raw"), r);
        }
        assert_eq!(compactor.dictionaries(), 0);
    }

    #[test]
    fn damaged_input_is_an_error_not_a_panic() {
        let compactor = Compactor::new();
        assert!(compactor.unpack(&[]).is_err());
        assert!(compactor.unpack(&[3, 1, 2, 3]).is_err());
        for i in 0..1000 {
            compactor.pack(&[], &record(i, BUSY));
        }
        let mut p = compactor.pack(&[], &record(5000, BUSY));
        p.truncate(p.len() / 2);
        assert!(compactor.unpack(&p).is_err());
    }
}
