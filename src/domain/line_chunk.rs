//! The stored form of a validated batch file: its lines packed a few thousand at a time into
//! immutable chunks, and its people as keyed digests sorted for duplicate checks.
//!
//! A batch of a million lines is stored as a few hundred rows instead of a million indexed
//! ones: an upload writes bytes, and a line gets a row of its own only when execution claims it
//! (`store::disbursement`). Both layouts start with a version byte, so a later layout can sit
//! beside this one, and both are decoded defensively: stored bytes that do not parse are
//! reported as corrupt, never trusted.
//!
//! Chunk record, per line in file order (integers are LEB128 varints):
//! `file_line - previous file_line`, `amount_fen`, the wallet id's 16 digits as a
//! little-endian u64, `name` (length, UTF-8), `memo` (0 for the previous line's memo, else
//! length + 1 and UTF-8), and the 7 characters a masked ID number shows (3 first, 4 last).
//! The ID numbers themselves are not in the record: their 18 characters per line are collected
//! apart ([`EncodedChunk::clear_ids`]) for the caller to seal as one value.

use crate::domain::citizen_id::CITIZEN_ID_LEN;
use crate::domain::directory::WalletId;
use crate::domain::disbursement::BatchLine;
use crate::domain::money::Amount;

/// Layout of [`EncodedChunk::lines`].
const CHUNK_FORMAT_V1: u8 = 1;
/// Layout of an encoded part of [`PersonEntry`]s.
const PEOPLE_FORMAT_V1: u8 = 1;

/// Bytes of a keyed digest kept for duplicate checks: 128 bits make an accidental collision
/// among even billions of people negligible, at half the storage of the full HMAC.
pub const PERSON_DIGEST_BYTES: usize = 16;

/// Characters of a masked ID number kept in clear: the first three and the last four.
const MASKED_HEAD: usize = 3;
const MASKED_TAIL: usize = 4;

/// Digits of a wallet id.
const WALLET_DIGITS: usize = 16;

/// Stored bytes that are not what this module wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stored batch bytes do not decode: {0}")]
pub struct ChunkError(&'static str);

/// One file line as stored in a chunk: everything but the ID number, which is sealed apart.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredLine {
    pub file_line: u64,
    pub name: String,
    pub wallet_id: WalletId,
    pub amount: Amount,
    pub memo: String,
    /// `110***********1234`.
    pub citizen_id_masked: String,
}

impl std::fmt::Debug for StoredLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredLine")
            .field("file_line", &self.file_line)
            .field("name", &crate::domain::citizen_id::mask_name(&self.name))
            .field("citizen_id", &self.citizen_id_masked)
            .field("amount", &self.amount)
            .finish()
    }
}

/// A finished chunk: the encoded lines and, apart, the ID numbers in clear (18 bytes per line,
/// in line order) for the caller to seal. `Debug` never shows the numbers.
pub struct EncodedChunk {
    pub lines: Vec<u8>,
    pub clear_ids: Vec<u8>,
    pub line_count: u32,
}

impl std::fmt::Debug for EncodedChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedChunk")
            .field("lines_bytes", &self.lines.len())
            .field("line_count", &self.line_count)
            .finish_non_exhaustive()
    }
}

/// Builds one chunk line by line.
#[derive(Default)]
pub struct ChunkEncoder {
    lines: Vec<u8>,
    clear_ids: Vec<u8>,
    line_count: u32,
    last_file_line: u64,
    last_memo: String,
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads stored bytes front to back; every read is bounds-checked.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn varint(&mut self) -> Result<u64, ChunkError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.bytes.split_first().ok_or(ChunkError("truncated number"))?;
            self.bytes = rest;
            value |= u64::from(byte & 0x7f).checked_shl(shift).ok_or(ChunkError("number too long"))?;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ChunkError("number too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ChunkError> {
        if self.bytes.len() < n {
            return Err(ChunkError("truncated field"));
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(taken)
    }

    fn text(&mut self, len: u64) -> Result<&'a str, ChunkError> {
        let len = usize::try_from(len).map_err(|_| ChunkError("field too long"))?;
        std::str::from_utf8(self.take(len)?).map_err(|_| ChunkError("text is not UTF-8"))
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl ChunkEncoder {
    pub fn new() -> ChunkEncoder {
        ChunkEncoder::default()
    }

    /// An encoder that holds `lines` lines without growing its list of ID numbers (a grown
    /// buffer would leave a copy of the numbers behind).
    pub fn with_capacity(lines: u32) -> ChunkEncoder {
        let lines = usize::try_from(lines).unwrap_or(0);
        ChunkEncoder {
            clear_ids: Vec::with_capacity(lines * CITIZEN_ID_LEN),
            lines: Vec::with_capacity(lines * 48),
            ..ChunkEncoder::default()
        }
    }

    pub fn line_count(&self) -> u32 {
        self.line_count
    }

    pub fn is_empty(&self) -> bool {
        self.line_count == 0
    }

    /// Appends a line; lines come in file order.
    pub fn push(&mut self, line: &BatchLine) {
        if self.lines.is_empty() {
            self.lines.push(CHUNK_FORMAT_V1);
        }
        debug_assert!(line.line > self.last_file_line || self.line_count == 0, "lines come in file order");
        put_varint(&mut self.lines, line.line - self.last_file_line);
        self.last_file_line = line.line;
        put_varint(&mut self.lines, u64::try_from(line.amount.fen()).expect("batch amounts are above zero"));
        let wallet: u64 = line.wallet_id.as_str().parse().expect("a wallet id is 16 digits");
        self.lines.extend_from_slice(&wallet.to_le_bytes());
        put_varint(&mut self.lines, line.name.len() as u64);
        self.lines.extend_from_slice(line.name.as_bytes());
        if self.line_count > 0 && line.memo == self.last_memo {
            put_varint(&mut self.lines, 0);
        } else {
            put_varint(&mut self.lines, line.memo.len() as u64 + 1);
            self.lines.extend_from_slice(line.memo.as_bytes());
            self.last_memo.clone_from(&line.memo);
        }
        let clear = line.citizen_id.expose_clear_text().as_bytes();
        debug_assert_eq!(clear.len(), CITIZEN_ID_LEN);
        self.lines.extend_from_slice(&clear[..MASKED_HEAD]);
        self.lines.extend_from_slice(&clear[CITIZEN_ID_LEN - MASKED_TAIL..]);
        self.clear_ids.extend_from_slice(clear);
        self.line_count += 1;
    }

    /// The chunk so far; the encoder starts over empty, with the capacity it had.
    pub fn finish(&mut self) -> EncodedChunk {
        let (lines_capacity, ids_capacity) = (self.lines.capacity(), self.clear_ids.capacity());
        let chunk = EncodedChunk {
            lines: std::mem::replace(&mut self.lines, Vec::with_capacity(lines_capacity)),
            clear_ids: std::mem::replace(&mut self.clear_ids, Vec::with_capacity(ids_capacity)),
            line_count: self.line_count,
        };
        self.line_count = 0;
        self.last_file_line = 0;
        self.last_memo.clear();
        chunk
    }
}

/// The lines of a chunk, in file order; `line_count` is what its row says it holds.
pub fn decode_chunk(bytes: &[u8], line_count: u64) -> Result<Vec<StoredLine>, ChunkError> {
    let (&version, rest) = bytes.split_first().ok_or(ChunkError("empty chunk"))?;
    if version != CHUNK_FORMAT_V1 {
        return Err(ChunkError("unknown chunk layout"));
    }
    let count = usize::try_from(line_count).map_err(|_| ChunkError("line count"))?;
    // Each record takes at least 1 + 1 + 8 + 1 + 1 + 7 bytes, which bounds what a corrupt
    // count could make us reserve.
    if count > rest.len() / 19 {
        return Err(ChunkError("fewer bytes than lines"));
    }
    let mut cursor = Cursor { bytes: rest };
    let mut lines = Vec::with_capacity(count);
    let (mut file_line, mut memo) = (0u64, String::new());
    for _ in 0..count {
        file_line = file_line.checked_add(cursor.varint()?).ok_or(ChunkError("line number"))?;
        let fen = i64::try_from(cursor.varint()?).map_err(|_| ChunkError("amount"))?;
        let amount = Amount::from_fen(fen).map_err(|_| ChunkError("amount"))?;
        let wallet = u64::from_le_bytes(cursor.take(8)?.try_into().expect("eight bytes"));
        if wallet >= 10u64.pow(WALLET_DIGITS as u32) {
            return Err(ChunkError("wallet id"));
        }
        let name_len = cursor.varint()?;
        let name = cursor.text(name_len)?.to_owned();
        match cursor.varint()? {
            0 => {}
            len => memo = cursor.text(len - 1)?.to_owned(),
        }
        let shown = cursor.take(MASKED_HEAD + MASKED_TAIL)?;
        let shown = std::str::from_utf8(shown).map_err(|_| ChunkError("masked ID number"))?;
        let mut masked = String::with_capacity(CITIZEN_ID_LEN);
        masked.push_str(&shown[..MASKED_HEAD]);
        masked.extend(std::iter::repeat_n('*', CITIZEN_ID_LEN - MASKED_HEAD - MASKED_TAIL));
        masked.push_str(&shown[MASKED_HEAD..]);
        lines.push(StoredLine {
            file_line,
            name,
            wallet_id: WalletId::from_trusted(format!("{wallet:016}")),
            amount,
            memo: memo.clone(),
            citizen_id_masked: masked,
        });
    }
    if !cursor.is_empty() {
        return Err(ChunkError("bytes after the last line"));
    }
    Ok(lines)
}

/// The ID number of line `index` of a chunk from its opened ID list.
pub fn citizen_id_at(clear_ids: &[u8], index: usize, line_count: u64) -> Result<&str, ChunkError> {
    if Some(clear_ids.len()) != usize::try_from(line_count).ok().and_then(|n| n.checked_mul(CITIZEN_ID_LEN)) {
        return Err(ChunkError("ID list length"));
    }
    let start = index.checked_mul(CITIZEN_ID_LEN).ok_or(ChunkError("ID index"))?;
    let raw = clear_ids.get(start..start + CITIZEN_ID_LEN).ok_or(ChunkError("ID index"))?;
    std::str::from_utf8(raw).map_err(|_| ChunkError("ID number is not text"))
}

/// One person of a batch as its duplicate checks see them: the first bytes of the keyed
/// digest of the ID number, the line (`seq`) and its amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PersonEntry {
    pub digest: [u8; PERSON_DIGEST_BYTES],
    pub seq: u64,
    pub amount_fen: i64,
}

/// Encodes entries already sorted by digest.
pub fn encode_people(entries: &[PersonEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + entries.len() * (PERSON_DIGEST_BYTES + 6));
    out.push(PEOPLE_FORMAT_V1);
    for entry in entries {
        debug_assert!(entry.amount_fen > 0);
        out.extend_from_slice(&entry.digest);
        put_varint(&mut out, entry.seq);
        put_varint(&mut out, u64::try_from(entry.amount_fen).unwrap_or(0));
    }
    out
}

/// The entries of one encoded part, in the order written (by digest).
pub fn decode_people(bytes: &[u8]) -> Result<Vec<PersonEntry>, ChunkError> {
    let (&version, rest) = bytes.split_first().ok_or(ChunkError("empty part"))?;
    if version != PEOPLE_FORMAT_V1 {
        return Err(ChunkError("unknown people layout"));
    }
    let mut cursor = Cursor { bytes: rest };
    let mut entries = Vec::with_capacity(rest.len() / (PERSON_DIGEST_BYTES + 2));
    while !cursor.is_empty() {
        let digest: [u8; PERSON_DIGEST_BYTES] = cursor.take(PERSON_DIGEST_BYTES)?.try_into().expect("digest bytes");
        let seq = cursor.varint()?;
        let amount_fen = i64::try_from(cursor.varint()?).map_err(|_| ChunkError("amount"))?;
        entries.push(PersonEntry { digest, seq, amount_fen });
    }
    if entries.windows(2).any(|pair| pair[0].digest > pair[1].digest) {
        return Err(ChunkError("people out of order"));
    }
    Ok(entries)
}

/// The digest bytes duplicate checks compare, from a full digest in hex (how rows written
/// line by line store it). `None` for text that is not such a digest.
pub fn person_digest_from_hex(hex_digest: &str) -> Option<[u8; PERSON_DIGEST_BYTES]> {
    let mut digest = [0u8; PERSON_DIGEST_BYTES];
    hex::decode_to_slice(hex_digest.get(..PERSON_DIGEST_BYTES * 2)?, &mut digest).ok()?;
    Some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::citizen_id::CitizenId;
    use proptest::prelude::*;

    fn id(first17: &str) -> String {
        let digits: [u8; 17] = first17.as_bytes().try_into().unwrap();
        format!("{first17}{}", crate::domain::citizen_id::check_char(&digits) as char)
    }

    fn line(n: u64, name: &str, memo: &str) -> BatchLine {
        BatchLine {
            line: n,
            name: name.to_owned(),
            citizen_id: CitizenId::parse(&id(&format!("32058419450315{:03}", n % 1000))).unwrap(),
            wallet_id: WalletId::parse(&format!("{:016}", n * 7)).unwrap(),
            amount: Amount::from_fen(100 + n as i64).unwrap(),
            memo: memo.to_owned(),
        }
    }

    #[test]
    fn a_chunk_decodes_to_its_lines_with_the_id_numbers_apart() {
        let lines = [line(2, "张三", "十一月"), line(3, "李四", "十一月"), line(7, "Wang Wu", ""), line(8, "x", "")];
        let mut encoder = ChunkEncoder::new();
        lines.iter().for_each(|l| encoder.push(l));
        let chunk = encoder.finish();
        assert!(encoder.is_empty());
        assert_eq!(chunk.line_count, 4);
        let decoded = decode_chunk(&chunk.lines, 4).unwrap();
        for (stored, original) in decoded.iter().zip(&lines) {
            assert_eq!(stored.file_line, original.line);
            assert_eq!(stored.name, original.name);
            assert_eq!(stored.wallet_id, original.wallet_id);
            assert_eq!(stored.amount, original.amount);
            assert_eq!(stored.memo, original.memo);
            assert_eq!(stored.citizen_id_masked, original.citizen_id.masked());
        }
        for (index, original) in lines.iter().enumerate() {
            assert_eq!(citizen_id_at(&chunk.clear_ids, index, 4).unwrap(), original.citizen_id.expose_clear_text());
        }
        // The encoded lines never hold a whole ID number.
        let middle = &lines[0].citizen_id.expose_clear_text()[3..14];
        assert!(!chunk.lines.windows(middle.len()).any(|w| w == middle.as_bytes()));
        assert!(citizen_id_at(&chunk.clear_ids, 4, 4).is_err());
        assert!(citizen_id_at(&chunk.clear_ids, 0, 5).is_err());
    }

    #[test]
    fn corrupt_chunks_are_refused() {
        let mut encoder = ChunkEncoder::new();
        encoder.push(&line(2, "张三", "m"));
        let chunk = encoder.finish();
        assert!(decode_chunk(&chunk.lines, 2).is_err());
        assert!(decode_chunk(&chunk.lines[..chunk.lines.len() - 1], 1).is_err());
        let mut longer = chunk.lines.clone();
        longer.push(0);
        assert!(decode_chunk(&longer, 1).is_err());
        let mut other_version = chunk.lines.clone();
        other_version[0] = 9;
        assert!(decode_chunk(&other_version, 1).is_err());
        assert!(decode_chunk(&[], 0).is_err());
        assert!(decode_chunk(&[1, 0xff, 0xff], u64::MAX).is_err());
    }

    #[test]
    fn digests_in_hex_compare_as_their_bytes() {
        let hex_digest = "00ff".repeat(16);
        let digest = person_digest_from_hex(&hex_digest).unwrap();
        assert_eq!(digest[..2], [0x00, 0xff]);
        assert!(person_digest_from_hex("00ff").is_none());
        assert!(person_digest_from_hex(&"zz".repeat(32)).is_none());
    }

    proptest! {
        #[test]
        fn people_round_trip_and_must_stay_sorted(
            mut raw in proptest::collection::vec((any::<[u8; 16]>(), any::<u64>(), 1i64..Amount::MAX_FEN), 0..50)
        ) {
            raw.sort();
            let entries: Vec<PersonEntry> =
                raw.iter().map(|&(digest, seq, amount_fen)| PersonEntry { digest, seq, amount_fen }).collect();
            let bytes = encode_people(&entries);
            prop_assert_eq!(decode_people(&bytes).unwrap(), entries.clone());
            if entries.len() >= 2 && entries[0].digest != entries[entries.len() - 1].digest {
                let mut reversed = entries.clone();
                reversed.reverse();
                prop_assert!(decode_people(&encode_people(&reversed)).is_err());
            }
        }

        #[test]
        fn chunks_round_trip_any_names_and_memos(
            parts in proptest::collection::vec(("[^\\x00-\\x1f]{1,20}", "[^\\x00-\\x1f]{0,20}", 1u64..5), 1..30)
        ) {
            let mut encoder = ChunkEncoder::new();
            let mut file_line = 1;
            let mut lines = Vec::new();
            for (name, memo, gap) in parts {
                file_line += gap;
                let mut l = line(file_line, &name, &memo);
                l.name = name;
                lines.push(l);
            }
            lines.iter().for_each(|l| encoder.push(l));
            let chunk = encoder.finish();
            let decoded = decode_chunk(&chunk.lines, lines.len() as u64).unwrap();
            for (stored, original) in decoded.iter().zip(&lines) {
                prop_assert_eq!(&stored.name, &original.name);
                prop_assert_eq!(&stored.memo, &original.memo);
                prop_assert_eq!(stored.file_line, original.line);
            }
        }
    }
}
