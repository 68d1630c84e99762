//! Batch upload: read, check and store a file of up to a million lines in one transaction, on
//! two cores at once.
//!
//! A blocking thread reads the file (`pack`): each line is parsed and checked, its ID number
//! keyed (HMAC-SHA256) for the duplicate checks and packed into the current chunk; a full chunk
//! has its ID numbers sealed as one AES-256-GCM value and goes to the database task, which
//! writes it while the thread reads on. The people of the file (16-byte digest, line, amount)
//! are sorted in bounded runs spilled to an unlinked temporary file; at the end of the file the
//! runs are merged into one stream in digest order, which finds every person named twice and
//! is checked, in the same pass, against the other batches of the programme and period (their
//! people are stored the same way, sorted, so the check is a merge too) and stored as this
//! batch's own sorted people.
//!
//! Memory: one chunk being packed and [`PIPELINE_DEPTH`] messages in flight, one run of
//! [`RUN_PEOPLE`] people being sorted, none of which depends on the file's length; while
//! merging, a read buffer of [`RUN_READ_PEOPLE`] people (40 KiB) per run, 16 runs for a million
//! lines. The checks against another batch hold one stored part of its people and the numbers
//! of its definitely failed lines.

use std::collections::{BinaryHeap, VecDeque};
use std::io::{Read, Seek as _, SeekFrom, Write as _};

use tokio::sync::mpsc;

use super::CITIZEN_ID_DIGEST_PURPOSE;
use crate::callbacks::secrets::SecretBox;
use crate::domain::batch::chunk_seal_context;
use crate::domain::citizen_id::CitizenId;
use crate::domain::disbursement::{
    BatchEncoding, BatchFileReader, Column, ControlTotals, ErrorList, LineError, LineRules, Problem,
};
use crate::domain::ids::BatchId;
use crate::domain::line_chunk::{
    ChunkEncoder, PERSON_DIGEST_BYTES, PersonEntry, decode_people, encode_people, person_digest_from_hex,
};
use crate::domain::money::Amount;
use crate::store::StoreError;
use crate::store::disbursement::{BatchUpload, OtherBatch, RowPersonCursor};

/// Lines per stored chunk: large enough that a million lines are a few hundred rows, small
/// enough that reading one line (a reveal, a claim) decodes little.
pub const LINE_CHUNK: u32 = 4_096;

/// People per stored part of a batch's sorted people, and per message of the sorted stream.
pub const PEOPLE_PART: usize = 4_096;

/// People sorted in memory before they are spilled as one run (at 40 bytes each, 2.5 MiB).
pub const RUN_PEOPLE: usize = 65_536;

/// People read ahead per run while the runs are merged (40 KiB per run).
const RUN_READ_PEOPLE: usize = 1_024;

/// Messages (chunks or parts) between the reading thread and the database task.
pub const PIPELINE_DEPTH: usize = 4;

/// People of full rows of other batches read per page.
const ROW_PEOPLE_PAGE: u32 = 4_096;

/// What the reading thread hands to the database task, in this order.
pub(super) enum Packed {
    /// The header was read: the batch row can be written.
    Header { encoding: BatchEncoding, chinese_headers: bool },
    /// Lines `first_seq ..` checked and packed, their ID numbers sealed.
    Chunk { first_seq: u64, line_count: u32, lines: Vec<u8>, citizen_ids_sealed: String },
    /// The next people of the file in digest order, and the same as a stored part. `clean`
    /// while the file has shown no problem so far (else nothing needs storing).
    People { people: Vec<FilePerson>, part: Vec<u8>, clean: bool },
}

/// One person of the uploaded file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FilePerson {
    pub digest: [u8; PERSON_DIGEST_BYTES],
    pub seq: u64,
    pub file_line: u64,
    pub amount_fen: i64,
}

/// The order people are merged in: digest, then file line (the earliest line of a person comes
/// first, and later ones are its duplicates).
type PersonKey = ([u8; PERSON_DIGEST_BYTES], u64);

/// Bytes of a [`FilePerson`] in the temporary file.
const PERSON_RECORD_BYTES: usize = PERSON_DIGEST_BYTES + 24;

impl FilePerson {
    fn key(&self) -> PersonKey {
        (self.digest, self.file_line)
    }

    fn write(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let mut record = [0u8; PERSON_RECORD_BYTES];
        record[..PERSON_DIGEST_BYTES].copy_from_slice(&self.digest);
        record[PERSON_DIGEST_BYTES..PERSON_DIGEST_BYTES + 8].copy_from_slice(&self.seq.to_le_bytes());
        record[PERSON_DIGEST_BYTES + 8..PERSON_DIGEST_BYTES + 16].copy_from_slice(&self.file_line.to_le_bytes());
        record[PERSON_DIGEST_BYTES + 16..].copy_from_slice(&self.amount_fen.to_le_bytes());
        out.write_all(&record)
    }

    fn read(record: &[u8]) -> FilePerson {
        let word = |at: usize| u64::from_le_bytes(record[at..at + 8].try_into().expect("eight bytes"));
        FilePerson {
            digest: record[..PERSON_DIGEST_BYTES].try_into().expect("digest bytes"),
            seq: word(PERSON_DIGEST_BYTES),
            file_line: word(PERSON_DIGEST_BYTES + 8),
            amount_fen: i64::from_le_bytes(
                record[PERSON_DIGEST_BYTES + 16..PERSON_RECORD_BYTES].try_into().expect("eight bytes"),
            ),
        }
    }
}

/// The people of a file in bounded sorted runs, merged at the end.
struct PeopleSorter {
    run: Vec<FilePerson>,
    /// Runs already spilled: the temporary file and each run's length.
    spilled: Option<(std::io::BufWriter<std::fs::File>, Vec<usize>)>,
}

impl PeopleSorter {
    fn new() -> PeopleSorter {
        PeopleSorter { run: Vec::with_capacity(RUN_PEOPLE), spilled: None }
    }

    fn push(&mut self, person: FilePerson) -> std::io::Result<()> {
        self.run.push(person);
        if self.run.len() == RUN_PEOPLE {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> std::io::Result<()> {
        if self.spilled.is_none() {
            // Unlinked at once: it holds keyed digests, line numbers and amounts, never an ID
            // number, and vanishes with the process.
            self.spilled = Some((std::io::BufWriter::with_capacity(1 << 16, tempfile::tempfile()?), Vec::new()));
        }
        let (file, runs) = self.spilled.as_mut().expect("spill file just made");
        self.run.sort_unstable_by_key(FilePerson::key);
        for person in &self.run {
            person.write(file)?;
        }
        runs.push(self.run.len());
        self.run.clear();
        Ok(())
    }

    /// Every person in (digest, file line) order.
    fn finish(mut self) -> std::io::Result<MergedPeople> {
        if self.spilled.is_none() {
            self.run.sort_unstable_by_key(FilePerson::key);
            return Ok(MergedPeople::Memory(self.run.into_iter()));
        }
        if !self.run.is_empty() {
            self.spill()?;
        }
        let (file, lengths) = self.spilled.take().expect("spilled runs");
        let mut file = file.into_inner().map_err(std::io::IntoInnerError::into_error)?;
        file.flush()?;
        let mut runs = Vec::with_capacity(lengths.len());
        let mut offset = 0u64;
        for length in lengths {
            runs.push(Run { next_offset: offset, left: length, buffer: VecDeque::new() });
            offset += (length * PERSON_RECORD_BYTES) as u64;
        }
        let mut merge = RunMerge { file, runs, heap: BinaryHeap::new() };
        for index in 0..merge.runs.len() {
            merge.refill(index)?;
            if let Some(first) = merge.runs[index].buffer.front() {
                merge.heap.push(std::cmp::Reverse((first.key(), index)));
            }
        }
        Ok(MergedPeople::Runs(Box::new(merge)))
    }
}

struct Run {
    next_offset: u64,
    left: usize,
    buffer: VecDeque<FilePerson>,
}

struct RunMerge {
    file: std::fs::File,
    runs: Vec<Run>,
    /// The head of each run that has one, by key, with the run's index.
    heap: BinaryHeap<std::cmp::Reverse<(PersonKey, usize)>>,
}

impl RunMerge {
    fn refill(&mut self, index: usize) -> std::io::Result<()> {
        let run = &mut self.runs[index];
        let n = run.left.min(RUN_READ_PEOPLE);
        if n == 0 {
            return Ok(());
        }
        let mut bytes = vec![0u8; n * PERSON_RECORD_BYTES];
        self.file.seek(SeekFrom::Start(run.next_offset))?;
        self.file.read_exact(&mut bytes)?;
        run.buffer.extend(bytes.chunks_exact(PERSON_RECORD_BYTES).map(FilePerson::read));
        run.next_offset += bytes.len() as u64;
        run.left -= n;
        Ok(())
    }

    fn next(&mut self) -> std::io::Result<Option<FilePerson>> {
        let Some(std::cmp::Reverse((_, index))) = self.heap.pop() else { return Ok(None) };
        let person = self.runs[index].buffer.pop_front().expect("a run in the heap has a person");
        if self.runs[index].buffer.is_empty() {
            self.refill(index)?;
        }
        if let Some(next) = self.runs[index].buffer.front() {
            self.heap.push(std::cmp::Reverse((next.key(), index)));
        }
        Ok(Some(person))
    }
}

enum MergedPeople {
    Memory(std::vec::IntoIter<FilePerson>),
    Runs(Box<RunMerge>),
}

impl MergedPeople {
    fn next(&mut self) -> std::io::Result<Option<FilePerson>> {
        match self {
            MergedPeople::Memory(people) => Ok(people.next()),
            MergedPeople::Runs(merge) => merge.next(),
        }
    }
}

/// A reader that hashes everything read through it, so the upload's SHA-256 is known once the
/// stream ends without holding the file.
pub(super) struct HashingReader<R> {
    inner: R,
    digest: ring::digest::Context,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }
}

impl<R: Read> HashingReader<R> {
    pub(super) fn new(inner: R) -> Self {
        HashingReader { inner, digest: ring::digest::Context::new(&ring::digest::SHA256) }
    }

    /// Reads to the end and returns the hex digest.
    pub(super) fn finish(mut self) -> std::io::Result<String> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok(hex::encode(self.digest.finish().as_ref()))
    }
}

/// What the reading thread needs.
pub(super) struct PackJob<R> {
    pub file: HashingReader<R>,
    pub batch_id: BatchId,
    pub rules: LineRules,
    pub per_period_cap: Amount,
    pub max_listed_errors: usize,
    pub secrets: SecretBox,
}

/// What the reading thread found once the file ended.
pub(super) struct PackOutcome {
    pub errors: ErrorList,
    pub totals: ControlTotals,
    pub lines_seen: u64,
    /// Good lines, all stored in chunks.
    pub chunked_lines: u64,
    /// None when the header was refused (nothing else was read).
    pub sha256: Option<String>,
}

/// Why the reading thread stopped early.
#[derive(Debug, thiserror::Error)]
pub(super) enum PackError {
    #[error("the database task stopped")]
    Stopped,
    #[error("reading or spilling the upload: {0}")]
    Io(#[from] std::io::Error),
    #[error("sealing ID numbers: {0}")]
    Seal(#[from] crate::callbacks::secrets::SecretError),
}

/// The reading thread; see the module comment. Sends [`Packed`] messages in order and returns
/// the problems it found and the file's totals.
pub(super) fn pack<R: Read>(job: PackJob<R>, out: &mpsc::Sender<Packed>) -> Result<PackOutcome, PackError> {
    let PackJob { mut file, batch_id, rules, per_period_cap, max_listed_errors, secrets } = job;
    let send = |message: Packed| out.blocking_send(message).map_err(|_| PackError::Stopped);
    let mut errors = ErrorList::new(max_listed_errors);
    let mut reader = match BatchFileReader::open(&mut file, rules) {
        Ok(reader) => reader,
        Err(problems) => {
            problems.into_iter().for_each(|e| errors.push(e));
            let totals = ControlTotals::default();
            return Ok(PackOutcome { errors, totals, lines_seen: 0, chunked_lines: 0, sha256: None });
        }
    };
    send(Packed::Header { encoding: reader.encoding(), chinese_headers: reader.chinese_headers() })?;

    let mut encoder = ChunkEncoder::with_capacity(LINE_CHUNK);
    let mut sorter = PeopleSorter::new();
    let mut seq = 0u64;
    let seal_chunk = |encoder: &mut ChunkEncoder, last_seq: u64| -> Result<(), PackError> {
        let mut chunk = encoder.finish();
        let first_seq = last_seq + 1 - u64::from(chunk.line_count);
        let citizen_ids_sealed = secrets.seal(&chunk.clear_ids, &chunk_seal_context(&batch_id, first_seq))?;
        // The numbers in clear go no further than the seal.
        chunk.clear_ids.fill(0);
        send(Packed::Chunk { first_seq, line_count: chunk.line_count, lines: chunk.lines, citizen_ids_sealed })
    };
    let person_of = |citizen_id: &CitizenId, seq: u64, file_line: u64, amount_fen: i64| {
        let digest = secrets.keyed_digest_bytes(CITIZEN_ID_DIGEST_PURPOSE, citizen_id.expose_clear_text().as_bytes());
        FilePerson {
            digest: digest[..PERSON_DIGEST_BYTES].try_into().expect("digest prefix"),
            seq,
            file_line,
            amount_fen,
        }
    };
    while let Some(result) = reader.next_line() {
        let line = match result {
            Ok(line) => line,
            Err(rejected) => {
                rejected.problems.into_iter().for_each(|e| errors.push(e));
                // A refused line whose ID number is good still names a person: a later line
                // naming them again is reported in the same report. Never stored (seq 0):
                // the file is refused already.
                if let Some(citizen_id) = &rejected.citizen_id {
                    sorter.push(person_of(citizen_id, 0, rejected.line, 0))?;
                }
                continue;
            }
        };
        if line.amount > per_period_cap {
            let problem = Problem::OverPeriodCap { cap: per_period_cap };
            errors.push(LineError { line: Some(line.line), column: Some(Column::Amount), problem });
            // Its amount is reported already; the person still counts for duplicates.
            sorter.push(person_of(&line.citizen_id, 0, line.line, 0))?;
            continue;
        }
        // Good lines are packed and stored even once the file is known to be refused: the
        // office gets every problem in one go, duplicates and other batches included, and the
        // rollback removes them.
        seq += 1;
        sorter.push(person_of(&line.citizen_id, seq, line.line, line.amount.fen()))?;
        encoder.push(&line);
        if encoder.line_count() == LINE_CHUNK {
            seal_chunk(&mut encoder, seq)?;
        }
    }
    if !encoder.is_empty() {
        seal_chunk(&mut encoder, seq)?;
    }
    let totals = reader.good_totals();
    let lines_seen = reader.lines_seen();
    drop(reader);
    let sha256 = file.finish()?;

    // The people in digest order: a person on several lines is a problem on every line after
    // the first; each person also goes to the database task for the checks against other
    // batches, and as this batch's stored people.
    let mut merged = sorter.finish()?;
    let mut people = Vec::with_capacity(PEOPLE_PART);
    let mut first: Option<FilePerson> = None;
    while let Some(person) = merged.next()? {
        match first {
            Some(earlier) if earlier.digest == person.digest => {
                let problem = Problem::DuplicateInBatch { first_line: earlier.file_line };
                errors.push(LineError { line: Some(person.file_line), column: Some(Column::CitizenId), problem });
            }
            _ => first = Some(person),
        }
        people.push(person);
        if people.len() == PEOPLE_PART {
            send_people(&send, &mut people, errors.is_empty())?;
        }
    }
    if !people.is_empty() {
        send_people(&send, &mut people, errors.is_empty())?;
    }
    Ok(PackOutcome { errors, totals, lines_seen, chunked_lines: seq, sha256: Some(sha256) })
}

fn send_people(
    send: &impl Fn(Packed) -> Result<(), PackError>,
    people: &mut Vec<FilePerson>,
    clean: bool,
) -> Result<(), PackError> {
    // A file with a problem stores no people; its refused lines' people (seq 0, no amount)
    // are there only to be checked.
    let part = if clean {
        let entries: Vec<PersonEntry> =
            people.iter().map(|p| PersonEntry { digest: p.digest, seq: p.seq, amount_fen: p.amount_fen }).collect();
        encode_people(&entries)
    } else {
        Vec::new()
    };
    send(Packed::People { people: std::mem::replace(people, Vec::with_capacity(PEOPLE_PART)), part, clean })
}

/// What other batches of the programme and period hold of one person.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct HeldElsewhere {
    /// In an open batch (draft, approved, running, paused).
    pub open: bool,
    /// Amounts of the person's lines in batches not cancelled, lines not definitely failed.
    pub committed_fen: i64,
}

/// One other batch's sorted people, read a part at a time.
struct BatchPeople {
    batch: OtherBatch,
    failed: Vec<u64>,
    next_part: u64,
    buffer: VecDeque<PersonEntry>,
    done: bool,
}

/// The people of other batches of the programme and period, in digest order, merged against an
/// upload's own sorted people: stored parts of chunked batches, and full rows (re-issues,
/// lines stored before chunks).
pub(super) struct OtherPeople {
    batches: Vec<BatchPeople>,
    rows: VecDeque<([u8; PERSON_DIGEST_BYTES], bool, i64)>,
    rows_cursor: RowPersonCursor,
    rows_done: bool,
    last: Option<([u8; PERSON_DIGEST_BYTES], HeldElsewhere)>,
}

impl OtherPeople {
    /// Call after the period gate is taken, so what is read is every committed batch.
    pub async fn open(upload: &mut BatchUpload) -> Result<OtherPeople, StoreError> {
        let mut batches = Vec::new();
        for batch in upload.other_batches().await? {
            let failed = upload.failed_chunked_lines(&batch.id).await?;
            batches.push(BatchPeople { batch, failed, next_part: 0, buffer: VecDeque::new(), done: false });
        }
        Ok(OtherPeople {
            batches,
            rows: VecDeque::new(),
            rows_cursor: RowPersonCursor::default(),
            rows_done: false,
            last: None,
        })
    }

    /// What other batches hold of the person with `digest`. Digests must come in ascending
    /// order (a repeat of the last one is answered again).
    pub async fn held(
        &mut self,
        upload: &mut BatchUpload,
        digest: [u8; PERSON_DIGEST_BYTES],
    ) -> Result<HeldElsewhere, StoreError> {
        if let Some((last, held)) = self.last
            && last == digest
        {
            return Ok(held);
        }
        let mut held = HeldElsewhere::default();
        for stream in &mut self.batches {
            loop {
                if stream.buffer.is_empty() {
                    if stream.done {
                        break;
                    }
                    match upload.people_part(&stream.batch.id, stream.next_part).await? {
                        Some(bytes) => {
                            let entries = decode_people(&bytes).map_err(|e| corrupt_people(&stream.batch.id, e))?;
                            stream.buffer.extend(entries);
                            stream.next_part += 1;
                        }
                        None => stream.done = true,
                    }
                    continue;
                }
                let head = stream.buffer[0];
                if head.digest > digest {
                    break;
                }
                stream.buffer.pop_front();
                if head.digest == digest && stream.failed.binary_search(&head.seq).is_err() {
                    held.open |= stream.batch.open;
                    held.committed_fen = held.committed_fen.saturating_add(head.amount_fen);
                }
            }
        }
        loop {
            if self.rows.is_empty() {
                if self.rows_done {
                    break;
                }
                let page = upload.people_in_rows(&self.rows_cursor, ROW_PEOPLE_PAGE).await?;
                self.rows_done = page.len() < ROW_PEOPLE_PAGE as usize;
                for person in page {
                    let row_digest = person_digest_from_hex(&person.citizen_id_hmac)
                        .ok_or_else(|| StoreError::Database(corrupt_row_digest()))?;
                    // The merge needs byte order; a collation that sorts hex otherwise would
                    // make it miss people, so it is refused instead.
                    if self.rows.back().is_some_and(|(previous, _, _)| *previous > row_digest)
                        || person.cursor.citizen_id_hmac < self.rows_cursor.citizen_id_hmac
                    {
                        return Err(StoreError::Database(corrupt_row_digest()));
                    }
                    self.rows.push_back((row_digest, person.open, person.amount_fen));
                    self.rows_cursor = person.cursor;
                }
                continue;
            }
            let (row_digest, open, amount_fen) = self.rows[0];
            if row_digest > digest {
                break;
            }
            self.rows.pop_front();
            if row_digest == digest {
                held.open |= open;
                held.committed_fen = held.committed_fen.saturating_add(amount_fen);
            }
        }
        self.last = Some((digest, held));
        Ok(held)
    }
}

fn corrupt_people(batch: &BatchId, error: crate::domain::line_chunk::ChunkError) -> StoreError {
    StoreError::Database(crate::store::directory::corrupt("subsidy_batch_people.entries", &format!("{batch}: {error}")))
}

fn corrupt_row_digest() -> sqlx::Error {
    crate::store::directory::corrupt("subsidy_lines.citizen_id_hmac", "not a hex digest in byte order")
}

/// The problems of one person of the file against what other batches hold.
pub(super) fn held_problem(person: &FilePerson, held: HeldElsewhere, per_period_cap: Amount) -> Option<LineError> {
    let problem = if held.open {
        Problem::InOtherOpenBatch
    } else if held.committed_fen.saturating_add(person.amount_fen) > per_period_cap.fen() {
        Problem::OverPeriodCap { cap: per_period_cap }
    } else {
        return None;
    };
    Some(LineError { line: Some(person.file_line), column: Some(Column::CitizenId), problem })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(n: u64, digest_byte: u8) -> FilePerson {
        let mut digest = [0u8; PERSON_DIGEST_BYTES];
        digest[0] = digest_byte;
        digest[15] = (n % 251) as u8;
        FilePerson { digest, seq: n, file_line: n + 1, amount_fen: 100 }
    }

    #[test]
    fn spilled_runs_merge_into_digest_order() {
        let mut sorter = PeopleSorter::new();
        let total = RUN_PEOPLE * 2 + 17;
        for n in 0..total as u64 {
            sorter.push(person(n, (n.wrapping_mul(2_654_435_761) % 256) as u8)).unwrap();
        }
        assert!(sorter.spilled.is_some());
        let mut merged = sorter.finish().unwrap();
        let mut seen = Vec::new();
        while let Some(p) = merged.next().unwrap() {
            seen.push(p);
        }
        assert_eq!(seen.len(), total);
        assert!(seen.windows(2).all(|w| w[0].key() <= w[1].key()));
        let mut seqs: Vec<u64> = seen.iter().map(|p| p.seq).collect();
        seqs.sort_unstable();
        assert!(seqs.iter().enumerate().all(|(i, s)| *s == i as u64));
    }

    #[test]
    fn a_small_file_sorts_in_memory() {
        let mut sorter = PeopleSorter::new();
        for n in (0..10u64).rev() {
            sorter.push(person(n, n as u8)).unwrap();
        }
        let mut merged = sorter.finish().unwrap();
        assert!(matches!(merged, MergedPeople::Memory(_)));
        assert_eq!(merged.next().unwrap().unwrap().seq, 0);
    }

    #[test]
    fn people_held_open_elsewhere_or_over_the_cap_are_problems() {
        let cap = Amount::from_fen(500).unwrap();
        let p = FilePerson { amount_fen: 300, ..person(1, 1) };
        assert_eq!(held_problem(&p, HeldElsewhere::default(), cap), None);
        let open = HeldElsewhere { open: true, committed_fen: 0 };
        assert_eq!(held_problem(&p, open, cap).unwrap().problem, Problem::InOtherOpenBatch);
        let paid = HeldElsewhere { open: false, committed_fen: 200 };
        assert_eq!(held_problem(&p, paid, cap), None);
        let more = HeldElsewhere { open: false, committed_fen: 201 };
        assert_eq!(held_problem(&p, more, cap).unwrap().problem, Problem::OverPeriodCap { cap });
    }
}
