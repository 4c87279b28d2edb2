//! HPACK (RFC 7541), the header compression of one HTTP/2 connection: [`Decoder`] turns
//! the header blocks a client sends into fields, keeping the connection's dynamic table
//! (§2.3.2, §4), and [`Encoder`] writes the header blocks tether sends.
//!
//! Hand-written rather than taken from a crate: none maintained gives both halves a
//! proxy's server side wants. The decoder hands each field over as borrowed slices (of
//! the block, of the tables, or of scratch buffers reused for Huffman-coded strings)
//! with no allocation per field, where `hpack` and `loona-hpack` build a `Vec` per name
//! and value; the encoder is stateless and writes no Huffman code and no dynamic table
//! entry, which RFC 7541 leaves optional (§2.3.2, §5.2) and which would cost
//! instructions on every response for a few bytes on the wire.

use std::collections::VecDeque;

mod huffman;

/// Why a header block could not be decoded. All but [`Error::ListTooLarge`] are
/// COMPRESSION_ERROR, fatal to the connection (RFC 9113 §4.3): the decoder's state no
/// longer matches the peer's encoder.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum Error {
    /// An integer or string runs past the end of the block.
    #[error("header block truncated")]
    Truncated,
    /// An integer past `u32::MAX` or longer than five continuation octets (§5.1).
    #[error("hpack integer too large")]
    IntegerOverflow,
    /// Index 0, or an index past the static and dynamic tables (§2.3.3).
    #[error("hpack index {0} is not in the tables")]
    BadIndex(u64),
    /// A Huffman-coded string with EOS in it, or padding that is not 0 to 7 ones (§5.2).
    #[error("invalid huffman-coded string")]
    Huffman,
    /// A dynamic table size update past SETTINGS_HEADER_TABLE_SIZE (§6.3).
    #[error("dynamic table size update larger than the announced maximum")]
    TableSizeTooLarge,
    /// A dynamic table size update after a field of the block (§4.2).
    #[error("dynamic table size update after a header field")]
    TableSizeUpdateLate,
    /// The decoded header list is larger than the `max_list_size` given to
    /// [`Decoder::decode`]. Not a compression error: the whole block was still decoded,
    /// so the decoder stays usable and only the stream is refused (RFC 9113 §10.5.1).
    #[error("header list larger than the announced maximum")]
    ListTooLarge,
}

impl Error {
    /// Whether the connection must end with COMPRESSION_ERROR (RFC 9113 §4.3).
    pub fn is_compression_error(&self) -> bool {
        !matches!(self, Error::ListTooLarge)
    }
}

/// What [`Decoder::decode`] fails with: the block's own error, or the first error the
/// field callback returned.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError<E> {
    /// The block's.
    Hpack(Error),
    /// The field callback's.
    Field(E),
}

impl<E> From<Error> for DecodeError<E> {
    fn from(e: Error) -> Self {
        DecodeError::Hpack(e)
    }
}

/// The static table (RFC 7541 Appendix A); index 1 is its first entry.
const STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// The first static table index with this name (RFC 7541 Appendix A), the one the
/// encoder refers to.
fn static_name_index(name: &[u8]) -> Option<usize> {
    Some(match name {
        b":authority" => 1,
        b":method" => 2,
        b":path" => 4,
        b":scheme" => 6,
        b":status" => 8,
        b"accept-charset" => 15,
        b"accept-encoding" => 16,
        b"accept-language" => 17,
        b"accept-ranges" => 18,
        b"accept" => 19,
        b"access-control-allow-origin" => 20,
        b"age" => 21,
        b"allow" => 22,
        b"authorization" => 23,
        b"cache-control" => 24,
        b"content-disposition" => 25,
        b"content-encoding" => 26,
        b"content-language" => 27,
        b"content-length" => 28,
        b"content-location" => 29,
        b"content-range" => 30,
        b"content-type" => 31,
        b"cookie" => 32,
        b"date" => 33,
        b"etag" => 34,
        b"expect" => 35,
        b"expires" => 36,
        b"from" => 37,
        b"host" => 38,
        b"if-match" => 39,
        b"if-modified-since" => 40,
        b"if-none-match" => 41,
        b"if-range" => 42,
        b"if-unmodified-since" => 43,
        b"last-modified" => 44,
        b"link" => 45,
        b"location" => 46,
        b"max-forwards" => 47,
        b"proxy-authenticate" => 48,
        b"proxy-authorization" => 49,
        b"range" => 50,
        b"referer" => 51,
        b"refresh" => 52,
        b"retry-after" => 53,
        b"server" => 54,
        b"set-cookie" => 55,
        b"strict-transport-security" => 56,
        b"transfer-encoding" => 57,
        b"user-agent" => 58,
        b"vary" => 59,
        b"via" => 60,
        b"www-authenticate" => 61,
        _ => return None,
    })
}

/// What §4.1 adds to an entry's name and value lengths for its size.
const ENTRY_OVERHEAD: usize = 32;

/// Continuation octets an integer may take (§5.1 lets a decoder limit them): five carry
/// 35 bits, more than the u32 range any value is held to.
const MAX_CONTINUATION_OCTETS: usize = 5;

/// Writes `value` as an integer with a `prefix_bits`-bit prefix (§5.1, 1 to 8 bits), the
/// first octet's other bits taken from `first_byte_flags`.
pub fn encode_int(out: &mut Vec<u8>, value: usize, prefix_bits: u8, first_byte_flags: u8) {
    let max_prefix = usize::from(u8::MAX >> (8 - prefix_bits.clamp(1, 8)));
    if value < max_prefix {
        out.push(first_byte_flags | value as u8);
        return;
    }
    out.push(first_byte_flags | max_prefix as u8);
    let mut rest = value - max_prefix;
    while rest >= 0x80 {
        out.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Reads an integer with a `prefix_bits`-bit prefix (§5.1, 1 to 8 bits) from the start of
/// `buf`, the first octet's other bits ignored: its value and the octets it took. Values
/// past `u32::MAX`, or more than five continuation octets, are [`Error::IntegerOverflow`].
pub fn decode_int(buf: &[u8], prefix_bits: u8) -> Result<(usize, usize), Error> {
    let max_prefix = u8::MAX >> (8 - prefix_bits.clamp(1, 8));
    let first = *buf.first().ok_or(Error::Truncated)?;
    let prefix = first & max_prefix;
    if prefix < max_prefix {
        return Ok((usize::from(prefix), 1));
    }
    let mut value = u64::from(prefix);
    for (i, &octet) in buf.iter().enumerate().skip(1) {
        if i > MAX_CONTINUATION_OCTETS {
            return Err(Error::IntegerOverflow);
        }
        // i <= 5: a shift of at most 28 leaves a u64 far from overflowing.
        value += u64::from(octet & 0x7f) << (7 * (i - 1));
        if value > u64::from(u32::MAX) {
            return Err(Error::IntegerOverflow);
        }
        if octet & 0x80 == 0 {
            let value = usize::try_from(value).map_err(|_| Error::IntegerOverflow)?;
            return Ok((value, i + 1));
        }
    }
    Err(Error::Truncated)
}

/// [`decode_int`] at `*pos` of `block`, moving `pos` past it.
fn read_int(block: &[u8], pos: &mut usize, prefix_bits: u8) -> Result<usize, Error> {
    let (value, len) = decode_int(block.get(*pos..).unwrap_or_default(), prefix_bits)?;
    *pos += len;
    Ok(value)
}

/// Where a decoded string's bytes are.
#[derive(Clone, Copy)]
enum Str {
    /// `block[start..end]`: not Huffman-coded.
    Block(usize, usize),
    /// The scratch buffer it was decoded into.
    Scratch,
}

/// Reads a string literal (§5.2) at `*pos`, Huffman-decoding it into `scratch` if coded.
fn read_string(block: &[u8], pos: &mut usize, scratch: &mut Vec<u8>) -> Result<Str, Error> {
    let huffman = block.get(*pos).ok_or(Error::Truncated)? & 0x80 != 0;
    let len = read_int(block, pos, 7)?;
    let start = *pos;
    let end = start
        .checked_add(len)
        .filter(|&end| end <= block.len())
        .ok_or(Error::Truncated)?;
    *pos = end;
    if huffman {
        huffman::decode(block.get(start..end).ok_or(Error::Truncated)?, scratch)?;
        Ok(Str::Scratch)
    } else {
        Ok(Str::Block(start, end))
    }
}

/// A literal field's name (§6.2).
#[derive(Clone, Copy)]
enum Name {
    Static(&'static [u8]),
    /// The name of the dynamic table's entry at this position (0 is the newest).
    Table(usize),
    Str(Str),
}

/// The dynamic table (§2.3.2, §4). Entries' names and values sit back to back in one
/// byte buffer, oldest first, so that inserting allocates nothing once the buffer has
/// grown to its working size: evicted bytes stay at its front until they outweigh the
/// table's maximum size, then the live ones are moved down over them, so the buffer
/// stays under about twice the maximum and each byte is moved about once.
#[derive(Debug, Default)]
struct Table {
    bytes: Vec<u8>,
    /// Oldest first; their bytes are consecutive in `bytes`.
    entries: VecDeque<Entry>,
    /// Sum of the entries' sizes (§4.1).
    size: usize,
    /// The current maximum size, as the last size update set it (§4.2).
    max_size: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    at: usize,
    name_len: usize,
    value_len: usize,
}

impl Entry {
    fn size(&self) -> usize {
        self.name_len + self.value_len + ENTRY_OVERHEAD
    }
}

/// The name of a new entry: bytes from outside the table, or the name of the entry at
/// this position, which the insertion may evict (§4.4 warns about that case).
enum NewName<'a> {
    Bytes(&'a [u8]),
    Own(usize),
}

impl Table {
    fn new(max_size: usize) -> Table {
        Table {
            max_size,
            ..Table::default()
        }
    }

    /// The entry at `position`, 0 the newest (index 62 of §2.3.3).
    fn entry(&self, position: usize) -> Option<Entry> {
        let from_oldest = self.entries.len().checked_sub(position.checked_add(1)?)?;
        self.entries.get(from_oldest).copied()
    }

    fn get(&self, position: usize) -> Option<(&[u8], &[u8])> {
        let e = self.entry(position)?;
        let name_end = e.at + e.name_len;
        Some((
            self.bytes.get(e.at..name_end)?,
            self.bytes.get(name_end..name_end + e.value_len)?,
        ))
    }

    /// Adds an entry, evicting the oldest ones to make room (§4.4).
    fn insert(&mut self, name: NewName<'_>, value: &[u8]) -> Result<(), Error> {
        let (name_len, own) = match name {
            NewName::Bytes(bytes) => (bytes.len(), None),
            NewName::Own(position) => {
                let e = self
                    .entry(position)
                    .ok_or(Error::BadIndex(position as u64))?;
                (e.name_len, Some(e.at..e.at + e.name_len))
            }
        };
        let size = name_len
            .saturating_add(value.len())
            .saturating_add(ENTRY_OVERHEAD);
        if size > self.max_size {
            // Larger than the table: it empties it and is not added.
            self.clear();
            return Ok(());
        }
        // Copied before evicting, so a name taken from an evicted entry is still there.
        let at = self.bytes.len();
        match (name, own) {
            (NewName::Own(_), Some(range)) if range.end <= at => {
                self.bytes.extend_from_within(range)
            }
            (NewName::Bytes(bytes), _) => self.bytes.extend_from_slice(bytes),
            _ => return Err(Error::BadIndex(0)),
        }
        self.bytes.extend_from_slice(value);
        self.evict_to(self.max_size - size);
        self.entries.push_back(Entry {
            at,
            name_len,
            value_len: value.len(),
        });
        self.size += size;
        self.compact();
        Ok(())
    }

    /// A dynamic table size update (§6.3), evicting what no longer fits (§4.3).
    fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
        self.compact();
    }

    fn evict_to(&mut self, size: usize) {
        while self.size > size {
            match self.entries.pop_front() {
                Some(e) => self.size -= e.size(),
                None => self.size = 0,
            }
        }
    }

    /// Drops the evicted bytes at the front of the buffer once they outweigh the maximum.
    fn compact(&mut self) {
        let Some(oldest) = self.entries.front() else {
            self.bytes.clear();
            return;
        };
        let dead = oldest.at.min(self.bytes.len());
        if dead > self.max_size {
            self.bytes.drain(..dead);
            for e in &mut self.entries {
                e.at = e.at.saturating_sub(dead);
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes.clear();
        self.size = 0;
    }
}

/// Decodes the header blocks of one connection, whose dynamic table it keeps (RFC 7541
/// §2.3.2, §4).
#[derive(Debug)]
pub struct Decoder {
    table: Table,
    /// SETTINGS_HEADER_TABLE_SIZE as tether announced it: the largest size update allowed.
    max_table_size: usize,
    /// Huffman-decoded names and values, reused from field to field.
    name_scratch: Vec<u8>,
    value_scratch: Vec<u8>,
}

/// How far a block's fields have been delivered, and the first failure to report.
struct Delivery<E> {
    list_size: usize,
    max_list_size: usize,
    failed: Option<DecodeError<E>>,
}

impl<E> Delivery<E> {
    /// Hands a field to the callback, unless the list outgrew its maximum or the callback
    /// failed before: then the rest of the block is decoded only to keep the dynamic table
    /// in step with the peer's.
    fn field(
        &mut self,
        callback: &mut impl FnMut(&[u8], &[u8]) -> Result<(), E>,
        name: &[u8],
        value: &[u8],
    ) {
        // The size SETTINGS_MAX_HEADER_LIST_SIZE counts (RFC 9113 §6.5.2).
        self.list_size = self
            .list_size
            .saturating_add(name.len())
            .saturating_add(value.len())
            .saturating_add(ENTRY_OVERHEAD);
        if self.failed.is_some() {
            return;
        }
        if self.list_size > self.max_list_size {
            self.failed = Some(DecodeError::Hpack(Error::ListTooLarge));
        } else if let Err(e) = callback(name, value) {
            self.failed = Some(DecodeError::Field(e));
        }
    }
}

impl Decoder {
    /// `max_table_size`: the SETTINGS_HEADER_TABLE_SIZE tether announced (4096 is the
    /// protocol's default, RFC 9113 §6.5.2).
    pub fn new(max_table_size: usize) -> Decoder {
        Decoder {
            table: Table::new(max_table_size),
            max_table_size,
            name_scratch: Vec::new(),
            value_scratch: Vec::new(),
        }
    }

    /// Decodes one complete header block (the HEADERS and CONTINUATION fragments joined),
    /// calling `field(name, value)` for each field in order, with bytes borrowed from the
    /// block, the tables or the decoder's scratch buffers.
    ///
    /// The decoded list may take `max_list_size` as SETTINGS_MAX_HEADER_LIST_SIZE counts it
    /// (RFC 9113 §6.5.2); past it, or once `field` fails, no more fields are handed over,
    /// but the block is still decoded to its end so that the dynamic table stays in step
    /// with the peer's and the decoder serves the next block; then the error is returned
    /// ([`Error::ListTooLarge`] or [`DecodeError::Field`]). Any other error is the block's
    /// own, a COMPRESSION_ERROR after which the decoder is not to be used again.
    pub fn decode<E>(
        &mut self,
        block: &[u8],
        max_list_size: usize,
        mut field: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), DecodeError<E>> {
        let mut delivery = Delivery {
            list_size: 0,
            max_list_size,
            failed: None,
        };
        let mut pos = 0;
        let mut at_start = true;
        while let Some(&first) = block.get(pos) {
            if first & 0x80 != 0 {
                // Indexed header field (§6.1).
                let index = read_int(block, &mut pos, 7)?;
                let (name, value) = self.lookup(index)?;
                delivery.field(&mut field, name, value);
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3): only before the block's first field
                // (§4.2), and at most what tether announced.
                if !at_start {
                    return Err(Error::TableSizeUpdateLate.into());
                }
                let size = read_int(block, &mut pos, 5)?;
                if size > self.max_table_size {
                    return Err(Error::TableSizeTooLarge.into());
                }
                self.table.set_max_size(size);
                continue;
            } else {
                // Literal with incremental indexing (§6.2.1, 01 and a 6-bit index), without
                // indexing (§6.2.2, 0000) or never indexed (§6.2.3, 0001, which matters only
                // to an intermediary that re-encodes the field: tether's encoder never
                // indexes anything).
                let indexing = first & 0x40 != 0;
                let index = read_int(block, &mut pos, if indexing { 6 } else { 4 })?;
                let name = if index == 0 {
                    Name::Str(read_string(block, &mut pos, &mut self.name_scratch)?)
                } else if let Some(&(name, _)) = STATIC.get(index - 1) {
                    Name::Static(name)
                } else {
                    let position = index - 1 - STATIC.len();
                    if self.table.entry(position).is_none() {
                        return Err(Error::BadIndex(index as u64).into());
                    }
                    Name::Table(position)
                };
                let value = match read_string(block, &mut pos, &mut self.value_scratch)? {
                    Str::Block(start, end) => block.get(start..end).ok_or(Error::Truncated)?,
                    Str::Scratch => self.value_scratch.as_slice(),
                };
                let name_bytes = match name {
                    Name::Static(name) => name,
                    Name::Table(position) => {
                        self.table
                            .get(position)
                            .ok_or(Error::BadIndex(index as u64))?
                            .0
                    }
                    Name::Str(Str::Block(start, end)) => {
                        block.get(start..end).ok_or(Error::Truncated)?
                    }
                    Name::Str(Str::Scratch) => self.name_scratch.as_slice(),
                };
                delivery.field(&mut field, name_bytes, value);
                if indexing {
                    // Again, not from `name_bytes`: a name borrowed from the table would
                    // be gone by the time an eviction made room for the new entry.
                    let name = match name {
                        Name::Table(position) => NewName::Own(position),
                        Name::Static(name) => NewName::Bytes(name),
                        Name::Str(Str::Block(start, end)) => {
                            NewName::Bytes(block.get(start..end).ok_or(Error::Truncated)?)
                        }
                        Name::Str(Str::Scratch) => NewName::Bytes(self.name_scratch.as_slice()),
                    };
                    self.table.insert(name, value)?;
                }
            }
            at_start = false;
        }
        match delivery.failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The field at `index` of the static and dynamic tables' joint index space (§2.3.3).
    fn lookup(&self, index: usize) -> Result<(&[u8], &[u8]), Error> {
        if let Some(&entry) = index.checked_sub(1).and_then(|i| STATIC.get(i)) {
            return Ok(entry);
        }
        index
            .checked_sub(STATIC.len() + 1)
            .and_then(|position| self.table.get(position))
            .ok_or(Error::BadIndex(index as u64))
    }
}

/// Writes the header blocks tether sends. It never indexes into the dynamic table and
/// never Huffman-codes (both optional for an encoder, RFC 7541 §2.3.2, §5.2), so it keeps
/// no state but one flag: the first block it writes on a connection begins with a dynamic
/// table size update to 0 (§6.3), so that a client that lowers SETTINGS_HEADER_TABLE_SIZE
/// never needs another one (nghttp2 requires an update after such a change, §4.2).
#[derive(Debug, Default)]
pub struct Encoder {
    size_update_sent: bool,
}

impl Encoder {
    /// An encoder for a new connection.
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// Starts a header block: on a connection's first, the size update to 0.
    pub fn begin(&mut self, out: &mut Vec<u8>) {
        if !self.size_update_sent {
            self.size_update_sent = true;
            encode_int(out, 0, 5, 0x20);
        }
    }

    /// `:status`: indexed (§6.1) when the static table has the code, else a literal
    /// without indexing (§6.2.2) with the name at index 8.
    pub fn status(&mut self, out: &mut Vec<u8>, code: u16) {
        let index = match code {
            200 => 8,
            204 => 9,
            206 => 10,
            304 => 11,
            400 => 12,
            404 => 13,
            500 => 14,
            _ => 0,
        };
        if index != 0 {
            out.push(0x80 | index);
            return;
        }
        encode_int(out, 8, 4, 0x00);
        let mut digits = [0u8; 5];
        let mut start = digits.len();
        let mut rest = code;
        for digit in digits.iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
            start -= 1;
            if rest == 0 {
                break;
            }
        }
        write_string(out, digits.get(start..).unwrap_or_default());
    }

    /// A field as a literal without indexing (§6.2.2), its name indexed when the static
    /// table has it (`name` is lowercase, as HTTP/2 requires), its value as it is.
    pub fn field(&mut self, out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        match static_name_index(name) {
            Some(index) => encode_int(out, index, 4, 0x00),
            None => {
                out.push(0x00);
                write_string(out, name);
            }
        }
        write_string(out, value);
    }
}

/// A string literal without Huffman coding (§5.2).
fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    encode_int(out, s.len(), 7, 0x00);
    out.extend_from_slice(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    fn fields(list: &[(&str, &str)]) -> Fields {
        list.iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    fn decode(decoder: &mut Decoder, block: &[u8]) -> Result<Fields, Error> {
        let mut out = Vec::new();
        decoder
            .decode(block, usize::MAX, |n, v| {
                out.push((n.to_vec(), v.to_vec()));
                Ok::<(), ()>(())
            })
            .map_err(|e| match e {
                DecodeError::Hpack(e) => e,
                DecodeError::Field(()) => unreachable!(),
            })?;
        Ok(out)
    }

    /// The dynamic table, newest first, as Appendix C prints it.
    fn table(decoder: &Decoder) -> Fields {
        (0..decoder.table.entries.len())
            .map(|i| {
                let (n, v) = decoder.table.get(i).unwrap();
                (n.to_vec(), v.to_vec())
            })
            .collect()
    }

    fn huffman(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        huffman::encode(s.as_bytes(), &mut out);
        out
    }

    fn huffman_decode(coded: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        huffman::decode(coded, &mut out)?;
        Ok(out)
    }

    // RFC 7541 Appendix C. The hex of C.3 to C.6 is the RFC's, as the `httlib-hpack`
    // crate's tests/specs.rs (MIT) transcribes it; it agrees byte for byte with the
    // `fluke-hpack` crate's transcription (MIT), which also gave C.2.

    #[test]
    fn c1_integers_encode_and_decode() {
        // C.1.1: 10 with a 5-bit prefix.
        let mut out = Vec::new();
        encode_int(&mut out, 10, 5, 0);
        assert_eq!(out, [0b0000_1010]);
        assert_eq!(decode_int(&[0b1110_1010], 5), Ok((10, 1)));
        // C.1.2: 1337 with a 5-bit prefix.
        out.clear();
        encode_int(&mut out, 1337, 5, 0);
        assert_eq!(out, [0b0001_1111, 0b1001_1010, 0b0000_1010]);
        assert_eq!(
            decode_int(&[0b0001_1111, 0b1001_1010, 0b0000_1010, 0xff], 5),
            Ok((1337, 3))
        );
        // C.1.3: 42 starting at an octet boundary (8-bit prefix).
        out.clear();
        encode_int(&mut out, 42, 8, 0);
        assert_eq!(out, [0b0010_1010]);
        assert_eq!(decode_int(&[42], 8), Ok((42, 1)));
    }

    #[test]
    fn integers_round_trip_at_every_prefix_and_boundary() {
        for prefix in 1..=8u8 {
            for value in [
                0,
                1,
                30,
                31,
                127,
                128,
                254,
                255,
                256,
                4096,
                1 << 20,
                u32::MAX as usize,
            ] {
                let mut out = Vec::new();
                encode_int(&mut out, value, prefix, 0);
                assert_eq!(
                    decode_int(&out, prefix),
                    Ok((value, out.len())),
                    "{value} {prefix}"
                );
            }
        }
    }

    #[test]
    fn c2_1_literal_with_indexing_enters_the_table() {
        let mut d = Decoder::new(4096);
        let block = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
        assert_eq!(
            decode(&mut d, &block),
            Ok(fields(&[("custom-key", "custom-header")]))
        );
        assert_eq!(table(&d), fields(&[("custom-key", "custom-header")]));
        assert_eq!(d.table.size, 55);
    }

    #[test]
    fn c2_2_literal_without_indexing_leaves_the_table_alone() {
        let mut d = Decoder::new(4096);
        let block = hex("040c 2f73 616d 706c 652f 7061 7468");
        assert_eq!(
            decode(&mut d, &block),
            Ok(fields(&[(":path", "/sample/path")]))
        );
        assert!(table(&d).is_empty());
    }

    #[test]
    fn c2_3_literal_never_indexed_leaves_the_table_alone() {
        let mut d = Decoder::new(4096);
        let block = hex("1008 7061 7373 776f 7264 0673 6563 7265 74");
        assert_eq!(
            decode(&mut d, &block),
            Ok(fields(&[("password", "secret")]))
        );
        assert!(table(&d).is_empty());
    }

    #[test]
    fn c2_4_indexed_field_from_the_static_table() {
        let mut d = Decoder::new(4096);
        assert_eq!(decode(&mut d, &[0x82]), Ok(fields(&[(":method", "GET")])));
        assert!(table(&d).is_empty());
    }

    /// C.3 and C.4: the same three requests, their tables after each.
    fn requests(blocks: [&str; 3]) {
        let mut d = Decoder::new(4096);
        let authority = (":authority", "www.example.com");
        let cache = ("cache-control", "no-cache");
        let custom = ("custom-key", "custom-value");

        let first = [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            authority,
        ];
        assert_eq!(decode(&mut d, &hex(blocks[0])), Ok(fields(&first)));
        assert_eq!(table(&d), fields(&[authority]));
        assert_eq!(d.table.size, 57);

        let second = [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            authority,
            cache,
        ];
        assert_eq!(decode(&mut d, &hex(blocks[1])), Ok(fields(&second)));
        assert_eq!(table(&d), fields(&[cache, authority]));
        assert_eq!(d.table.size, 110);

        let third = [
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            authority,
            custom,
        ];
        assert_eq!(decode(&mut d, &hex(blocks[2])), Ok(fields(&third)));
        assert_eq!(table(&d), fields(&[custom, cache, authority]));
        assert_eq!(d.table.size, 164);
    }

    #[test]
    fn c3_requests_without_huffman() {
        requests([
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ]);
    }

    #[test]
    fn c4_requests_with_huffman() {
        requests([
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ]);
    }

    /// C.5 and C.6: the same three responses with a 256-octet table, which evicts.
    fn responses(blocks: [&str; 3]) {
        let mut d = Decoder::new(256);
        let private = ("cache-control", "private");
        let date21 = ("date", "Mon, 21 Oct 2013 20:13:21 GMT");
        let date22 = ("date", "Mon, 21 Oct 2013 20:13:22 GMT");
        let location = ("location", "https://www.example.com");
        let gzip = ("content-encoding", "gzip");
        let cookie = (
            "set-cookie",
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
        );

        let first = [(":status", "302"), private, date21, location];
        assert_eq!(decode(&mut d, &hex(blocks[0])), Ok(fields(&first)));
        assert_eq!(
            table(&d),
            fields(&[location, date21, private, (":status", "302")])
        );
        assert_eq!(d.table.size, 222);

        let second = [(":status", "307"), private, date21, location];
        assert_eq!(decode(&mut d, &hex(blocks[1])), Ok(fields(&second)));
        assert_eq!(
            table(&d),
            fields(&[(":status", "307"), location, date21, private])
        );
        assert_eq!(d.table.size, 222);

        let third = [(":status", "200"), private, date22, location, gzip, cookie];
        assert_eq!(decode(&mut d, &hex(blocks[2])), Ok(fields(&third)));
        assert_eq!(table(&d), fields(&[cookie, gzip, date22]));
        assert_eq!(d.table.size, 215);
    }

    #[test]
    fn c5_responses_without_huffman_evict() {
        responses([
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
             2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
             6c65 2e63 6f6d",
            "4803 3330 37c1 c0bf",
            "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
             54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
             5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
             3d31",
        ]);
    }

    #[test]
    fn c6_responses_with_huffman_evict() {
        responses([
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
             2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            "4883 640e ffc1 c0bf",
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
             77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
             9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        ]);
    }

    #[test]
    fn huffman_round_trips_every_octet() {
        let all: Vec<u8> = (0..=255).collect();
        let mut coded = Vec::new();
        huffman::encode(&all, &mut coded);
        assert_eq!(huffman_decode(&coded), Ok(all.clone()));
        for b in all {
            coded.clear();
            huffman::encode(&[b], &mut coded);
            assert_eq!(huffman_decode(&coded), Ok(vec![b]), "{b}");
        }
    }

    #[test]
    fn huffman_empty_string_decodes_empty() {
        assert_eq!(huffman_decode(&[]), Ok(Vec::new()));
    }

    #[test]
    fn huffman_eos_in_a_string_is_an_error() {
        // 30 ones are EOS, then two of padding.
        assert_eq!(
            huffman_decode(&[0xff, 0xff, 0xff, 0xff]),
            Err(Error::Huffman)
        );
        // After a symbol: 'a' (00011), then EOS.
        let mut bits: u64 = 0b00011;
        bits = (bits << 30) | 0x3fff_ffff;
        bits <<= 5; // 40 bits, padded with ones below
        bits |= 0b11111;
        let coded = bits.to_be_bytes()[3..].to_vec();
        assert_eq!(huffman_decode(&coded), Err(Error::Huffman));
    }

    #[test]
    fn huffman_padding_of_eight_bits_or_more_is_an_error() {
        // 'a' is 00011: three ones of padding are fine, eleven are not.
        assert_eq!(huffman_decode(&[0x1f]), Ok(b"a".to_vec()));
        assert_eq!(huffman_decode(&[0x1f, 0xff]), Err(Error::Huffman));
        // A whole octet of padding alone.
        assert_eq!(huffman_decode(&[0xff]), Err(Error::Huffman));
        // "aa" is 10 bits, padded with 6 ones; "aaaaa" is 25, padded with 7, the most.
        assert_eq!(huffman_decode(&[0x18, 0xff]), Ok(b"aa".to_vec()));
        assert_eq!(huffman("aaaaa"), [0x18, 0xc6, 0x31, 0xff]);
        assert_eq!(
            huffman_decode(&[0x18, 0xc6, 0x31, 0xff]),
            Ok(b"aaaaa".to_vec())
        );
        assert_eq!(
            huffman_decode(&[0x18, 0xc6, 0x31, 0xff, 0xff]),
            Err(Error::Huffman)
        );
    }

    #[test]
    fn huffman_padding_not_all_ones_is_an_error() {
        // 'a' then 000.
        assert_eq!(huffman_decode(&[0x18]), Err(Error::Huffman));
        // 'a' then 101.
        assert_eq!(huffman_decode(&[0x1d]), Err(Error::Huffman));
    }

    fn error(block: &[u8]) -> Error {
        decode(&mut Decoder::new(4096), block).unwrap_err()
    }

    #[test]
    fn index_zero_is_an_error() {
        assert_eq!(error(&[0x80]), Error::BadIndex(0));
    }

    #[test]
    fn index_past_the_tables_is_an_error() {
        assert_eq!(error(&[0x80 | 62]), Error::BadIndex(62));
        // A name index (literal with indexing) past them too.
        assert_eq!(error(&[0x40 | 62, 0x00]), Error::BadIndex(62));
        // Past the dynamic table's one entry.
        let mut d = Decoder::new(4096);
        decode(&mut d, &hex("4001 6101 62")).unwrap();
        assert_eq!(decode(&mut d, &[0x80 | 62]), Ok(fields(&[("a", "b")])));
        assert_eq!(decode(&mut d, &[0x80 | 63]), Err(Error::BadIndex(63)));
    }

    #[test]
    fn size_update_larger_than_announced_is_an_error() {
        let mut block = Vec::new();
        encode_int(&mut block, 4097, 5, 0x20);
        assert_eq!(error(&block), Error::TableSizeTooLarge);
        block.clear();
        encode_int(&mut block, 4096, 5, 0x20);
        assert_eq!(decode(&mut Decoder::new(4096), &block), Ok(Vec::new()));
    }

    #[test]
    fn size_update_after_a_field_is_an_error() {
        assert_eq!(error(&[0x82, 0x20]), Error::TableSizeUpdateLate);
        // Two at the start are fine (§4.2 allows one to a minimum and one to the final size).
        assert_eq!(
            decode(&mut Decoder::new(4096), &[0x20, 0x3f, 0x61, 0x82]),
            Ok(fields(&[(":method", "GET")]))
        );
    }

    #[test]
    fn size_update_evicts_and_zero_empties_the_table() {
        let mut d = Decoder::new(4096);
        decode(&mut d, &hex("4001 6101 62 4001 6301 64")).unwrap();
        assert_eq!(table(&d), fields(&[("c", "d"), ("a", "b")]));
        // 34: room for one entry of 34 octets, the newest.
        decode(&mut d, &[0x20 | 31, 3]).unwrap();
        assert_eq!(table(&d), fields(&[("c", "d")]));
        decode(&mut d, &[0x20]).unwrap();
        assert!(table(&d).is_empty());
        assert_eq!(d.table.size, 0);
        // Inserting into a table of size 0 keeps it empty.
        assert_eq!(
            decode(&mut d, &hex("4001 6101 62")),
            Ok(fields(&[("a", "b")]))
        );
        assert!(table(&d).is_empty());
    }

    #[test]
    fn entry_larger_than_the_table_empties_it() {
        let mut d = Decoder::new(40);
        decode(&mut d, &hex("4001 6101 62")).unwrap();
        assert_eq!(table(&d), fields(&[("a", "b")]));
        // 2 + 7 + 32 = 41 > 40.
        let block = hex("4002 6161 0762 6262 6262 6262");
        assert_eq!(decode(&mut d, &block), Ok(fields(&[("aa", "bbbbbbb")])));
        assert!(table(&d).is_empty());
        assert_eq!(d.table.size, 0);
    }

    #[test]
    fn new_entry_named_after_the_entry_it_evicts() {
        // Room for one entry: the new one takes the name of the one it evicts (§4.4).
        let mut d = Decoder::new(50);
        decode(&mut d, &hex("400a 6375 7374 6f6d 2d6b 6579 0161")).unwrap();
        let block = [0x40 | 62, 0x02, b'b', b'c'];
        assert_eq!(decode(&mut d, &block), Ok(fields(&[("custom-key", "bc")])));
        assert_eq!(table(&d), fields(&[("custom-key", "bc")]));
        assert_eq!(d.table.size, 44);
    }

    #[test]
    fn table_buffer_stays_bounded_over_many_insertions() {
        let mut d = Decoder::new(256);
        let mut block = Vec::new();
        for i in 0..10_000u32 {
            block.clear();
            block.push(0x40);
            let name = format!("n{}", i % 7);
            let value = format!("value-{i}");
            write_string(&mut block, name.as_bytes());
            write_string(&mut block, value.as_bytes());
            block.push(0x80 | 62);
            let got = decode(&mut d, &block).unwrap();
            assert_eq!(got[1], (name.into_bytes(), value.into_bytes()));
            assert!(d.table.size <= 256);
            assert!(
                d.table.bytes.len() <= 2 * 256 + 64,
                "{}",
                d.table.bytes.len()
            );
        }
    }

    #[test]
    fn truncated_integer_is_an_error() {
        assert_eq!(error(&[0xff]), Error::Truncated);
        assert_eq!(error(&[0xff, 0x80]), Error::Truncated);
        assert_eq!(error(&[0x3f]), Error::Truncated);
    }

    #[test]
    fn truncated_string_is_an_error() {
        // A 5-octet value with one octet there.
        assert_eq!(error(&[0x04, 0x05, b'a']), Error::Truncated);
        // No name length, then no value.
        assert_eq!(error(&[0x00]), Error::Truncated);
        assert_eq!(error(&[0x00, 0x01, b'a']), Error::Truncated);
        // A huge length.
        let mut block = vec![0x04];
        encode_int(&mut block, u32::MAX as usize, 7, 0x00);
        assert_eq!(error(&block), Error::Truncated);
    }

    #[test]
    fn integer_overflow_is_an_error() {
        // Past u32::MAX.
        assert_eq!(
            error(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            Error::IntegerOverflow
        );
        // Six continuation octets, even of zeros.
        assert_eq!(
            error(&[0xff, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
            Error::IntegerOverflow
        );
        assert_eq!(
            decode_int(&[0xff, 0x80, 0x80, 0x80, 0x80, 0x00], 7),
            Ok((127, 6))
        );
    }

    #[test]
    fn huffman_errors_in_a_block_are_errors() {
        // :path value of four octets of ones: EOS.
        assert_eq!(error(&[0x04, 0x84, 0xff, 0xff, 0xff, 0xff]), Error::Huffman);
        // A name of one octet of padding.
        assert_eq!(error(&[0x00, 0x81, 0xff, 0x00]), Error::Huffman);
    }

    #[test]
    fn list_too_large_still_decodes_the_block_into_the_table() {
        let mut d = Decoder::new(4096);
        // :method GET (42), then a literal with indexing a=b (34).
        let block = hex("82 4001 6101 62");
        let mut seen = Vec::new();
        let result = d.decode(&block, 75, |n, v| {
            seen.push((n.to_vec(), v.to_vec()));
            Ok::<(), ()>(())
        });
        assert_eq!(result, Err(DecodeError::Hpack(Error::ListTooLarge)));
        assert!(!Error::ListTooLarge.is_compression_error());
        assert_eq!(seen, fields(&[(":method", "GET")]));
        assert_eq!(table(&d), fields(&[("a", "b")]));
        // Exactly the maximum is fine, and the decoder serves the next block.
        let result = d.decode(&[0x82, 0x80 | 62], 76, |_, _| Ok::<(), ()>(()));
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn callback_error_is_returned_and_the_table_kept_in_step() {
        let mut d = Decoder::new(4096);
        let block = hex("4001 6101 62 4001 6301 64");
        let mut calls = 0;
        let result = d.decode(&block, usize::MAX, |_, _| {
            calls += 1;
            Err("refused")
        });
        assert_eq!(result, Err(DecodeError::Field("refused")));
        assert_eq!(calls, 1);
        assert_eq!(table(&d), fields(&[("c", "d"), ("a", "b")]));
        assert_eq!(
            decode(&mut d, &[0xbe, 0xbf]),
            Ok(fields(&[("c", "d"), ("a", "b")]))
        );
    }

    #[test]
    fn block_errors_win_over_a_callback_error() {
        let mut d = Decoder::new(4096);
        let result = d.decode(&[0x82, 0x80], usize::MAX, |_, _| Err(()));
        assert_eq!(result, Err(DecodeError::Hpack(Error::BadIndex(0))));
    }

    #[test]
    fn empty_block_has_no_fields() {
        assert_eq!(decode(&mut Decoder::new(4096), &[]), Ok(Vec::new()));
    }

    #[test]
    fn encoder_block_decodes_back_to_its_fields() {
        let mut e = Encoder::new();
        let mut d = Decoder::new(4096);
        let sent = fields(&[
            ("content-type", "text/html; charset=utf-8"),
            ("x-request-id", "abc"),
            ("set-cookie", "a=b"),
            ("set-cookie", ""),
            ("", ""),
            ("server", &"v".repeat(300)),
        ]);
        for _ in 0..3 {
            let mut out = Vec::new();
            e.begin(&mut out);
            e.status(&mut out, 200);
            for (n, v) in &sent {
                e.field(&mut out, n, v);
            }
            let got = decode(&mut d, &out).unwrap();
            assert_eq!(got[0], (b":status".to_vec(), b"200".to_vec()));
            assert_eq!(&got[1..], &sent[..]);
            assert!(table(&d).is_empty());
        }
    }

    #[test]
    fn encoder_status_indexed_when_static_else_literal() {
        for (code, index) in [
            (200, 8),
            (204, 9),
            (206, 10),
            (304, 11),
            (400, 12),
            (404, 13),
            (500, 14),
        ] {
            let mut out = Vec::new();
            Encoder::new().status(&mut out, code);
            assert_eq!(out, [0x80 | index]);
        }
        for code in [100u16, 101, 201, 302, 307, 429, 502, 599, 0, 7, 65535] {
            let mut out = Vec::new();
            Encoder::new().status(&mut out, code);
            let digits = code.to_string();
            let mut expected = vec![0x08, digits.len() as u8];
            expected.extend_from_slice(digits.as_bytes());
            assert_eq!(out, expected, "{code}");
            let got = decode(&mut Decoder::new(4096), &out).unwrap();
            assert_eq!(got, fields(&[(":status", &digits)]));
        }
    }

    #[test]
    fn encoder_first_block_starts_with_a_size_update_to_zero() {
        let mut e = Encoder::new();
        let mut first = Vec::new();
        e.begin(&mut first);
        e.status(&mut first, 200);
        assert_eq!(first, [0x20, 0x88]);
        let mut second = Vec::new();
        e.begin(&mut second);
        e.status(&mut second, 200);
        assert_eq!(second, [0x88]);
        // And a decoder takes it, emptying its table.
        let mut d = Decoder::new(4096);
        decode(&mut d, &hex("4001 6101 62")).unwrap();
        decode(&mut d, &first).unwrap();
        assert!(table(&d).is_empty());
        assert_eq!(d.table.max_size, 0);
    }

    #[test]
    fn encoder_indexes_names_from_the_static_table() {
        let mut out = Vec::new();
        Encoder::new().field(&mut out, b"content-type", b"a");
        assert_eq!(out, [0x0f, 31 - 15, 0x01, b'a']);
        out.clear();
        Encoder::new().field(&mut out, b"age", b"1");
        assert_eq!(out, [0x0f, 21 - 15, 0x01, b'1']);
        out.clear();
        Encoder::new().field(&mut out, b":path", b"/");
        assert_eq!(out, [0x04, 0x01, b'/']);
        out.clear();
        Encoder::new().field(&mut out, b"x-a", b"");
        assert_eq!(out, [0x00, 0x03, b'x', b'-', b'a', 0x00]);
        // Uppercase is not looked up: HTTP/2 names are lowercase.
        out.clear();
        Encoder::new().field(&mut out, b"Age", b"");
        assert_eq!(out[0], 0x00);
    }

    #[test]
    fn static_name_index_is_the_first_entry_with_the_name() {
        for (i, (name, _)) in STATIC.iter().enumerate() {
            let first = STATIC.iter().position(|(n, _)| n == name).unwrap() + 1;
            assert_eq!(static_name_index(name), Some(first), "{}", i + 1);
        }
        assert_eq!(static_name_index(b"x-forwarded-for"), None);
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn random_bytes_never_panic_the_decoder() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut block = Vec::new();
        for _ in 0..20_000 {
            block.clear();
            let len = (rng.next() % 48) as usize;
            for _ in 0..len {
                // Biased towards small values and all ones, where the edges are.
                let r = rng.next();
                block.push(match r % 4 {
                    0 => 0xff,
                    1 => (r >> 8) as u8 & 0x0f,
                    _ => (r >> 8) as u8,
                });
            }
            let mut d = Decoder::new((rng.next() % 300) as usize);
            let max_list = (rng.next() % 400) as usize;
            for _ in 0..2 {
                let _ = d.decode(&block, max_list, |_, _| Ok::<(), ()>(()));
            }
        }
    }

    #[test]
    fn random_huffman_strings_round_trip() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let mut coded = Vec::new();
        let mut decoded = Vec::new();
        for _ in 0..5_000 {
            let len = (rng.next() % 40) as usize;
            let s: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            coded.clear();
            huffman::encode(&s, &mut coded);
            huffman::decode(&coded, &mut decoded).unwrap();
            assert_eq!(decoded, s);
        }
    }
}
