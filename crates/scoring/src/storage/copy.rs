//! The reader of PostgreSQL's binary `COPY` format for `signal_days` rows:
//! a recomputation reads its day cells this way (see `pg::copy_cells`),
//! decoding them here as the chunks arrive.

use bowtie_runtime::error::Error;
use bowtie_runtime::sql::{corrupt, internal};
use bowtie_runtime::{AccountId, Instant};
use uuid::Uuid;

use super::day_cells::stored_kind;
use crate::domain::cells::Cell;

/// Decodes `signal_days` rows in PostgreSQL's binary `COPY` format, as the
/// chunks arrive (a row may span chunks).
#[derive(Default)]
pub struct CopyDecoder {
    /// Bytes not decoded yet.
    pending: Vec<u8>,
    /// The header was read.
    started: bool,
    /// The trailer was read.
    ended: bool,
}

/// The binary `COPY` signature.
const COPY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

impl CopyDecoder {
    /// Decodes every complete row of `chunk` (with what was pending) into `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<(AccountId, Cell)>) -> Result<(), Error> {
        self.pending.extend_from_slice(chunk);
        let mut at = 0;
        if !self.started {
            // Signature, flags, then the header extension's length and bytes.
            let Some(extension) = read_i32(&self.pending, COPY_SIGNATURE.len() + 4) else {
                return Ok(());
            };
            if !self.pending.starts_with(COPY_SIGNATURE) {
                return Err(corrupt("copied cells: not in the binary COPY format"));
            }
            let header = COPY_SIGNATURE.len() + 8 + usize::try_from(extension).map_err(internal)?;
            if self.pending.len() < header {
                return Ok(());
            }
            at = header;
            self.started = true;
        }
        while !self.ended {
            match decode_cell(&self.pending[at..])? {
                Decoded::Row(used, id, cell) => {
                    out.push((id, cell));
                    at += used;
                }
                Decoded::End(used) => {
                    self.ended = true;
                    at += used;
                }
                Decoded::Incomplete => break,
            }
        }
        self.pending.drain(..at);
        Ok(())
    }

    /// Checks that the copy ended where it should.
    pub fn finish(&self) -> Result<(), Error> {
        if self.ended && self.pending.is_empty() {
            Ok(())
        } else {
            Err(corrupt("copied cells: the data ended early"))
        }
    }
}

/// One step of [`CopyDecoder`].
enum Decoded {
    /// A row and the bytes it took.
    Row(usize, AccountId, Cell),
    /// The trailer and its length.
    End(usize),
    /// More bytes are needed.
    Incomplete,
}

fn read_i16(bytes: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn read_i32(bytes: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn read_i64(bytes: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Decodes the row at the start of `bytes`: an account id (text), then
/// kind (int4), day, total, events, last value and last time (int8).
fn decode_cell(bytes: &[u8]) -> Result<Decoded, Error> {
    let Some(fields) = read_i16(bytes, 0) else {
        return Ok(Decoded::Incomplete);
    };
    if fields == -1 {
        return Ok(Decoded::End(2));
    }
    if fields != 7 {
        return Err(corrupt(format_args!(
            "copied cells: {fields} columns, not 7"
        )));
    }
    let Some(id_len) = read_i32(bytes, 2) else {
        return Ok(Decoded::Incomplete);
    };
    let id_len = usize::try_from(id_len).map_err(|_| corrupt("copied cells: no account id"))?;
    // The id, then one int4 and five int8, each after its length.
    let len = 6 + id_len + (4 + 4) + 5 * (4 + 8);
    if bytes.len() < len {
        return Ok(Decoded::Incomplete);
    }
    let id = AccountId(Uuid::try_parse_ascii(&bytes[6..6 + id_len]).map_err(internal)?);
    let mut at = 6 + id_len;
    let mut field = |width: usize| -> Result<usize, Error> {
        if read_i32(bytes, at) != Some(width as i32) {
            return Err(corrupt("copied cells: unexpected column width"));
        }
        at += 4 + width;
        Ok(at - width)
    };
    let kind = read_i32(bytes, field(4)?);
    let day = read_i64(bytes, field(8)?);
    let total = read_i64(bytes, field(8)?);
    let events = read_i64(bytes, field(8)?);
    let last_value = read_i64(bytes, field(8)?);
    let last_at = read_i64(bytes, field(8)?);
    let (Some(kind), Some(day), Some(total), Some(events), Some(last_value), Some(last_at)) =
        (kind, day, total, events, last_value, last_at)
    else {
        return Err(corrupt("copied cells: truncated row"));
    };
    let cell = Cell {
        day: i32::try_from(day).map_err(internal)?,
        kind: stored_kind(kind)?,
        total,
        events,
        last_value,
        last_at: Instant::from_micros(last_at),
    };
    Ok(Decoded::Row(len, id, cell))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::cells::Kind;
    use crate::domain::cells::tests::cell;
    use bowtie_proto::scoring::SignalType;

    /// A `signal_days` row as PostgreSQL's binary COPY writes it.
    fn copied_row(id: AccountId, c: &Cell) -> Vec<u8> {
        let mut out = 7i16.to_be_bytes().to_vec();
        let text = id.to_string();
        out.extend((text.len() as i32).to_be_bytes());
        out.extend(text.as_bytes());
        out.extend(4i32.to_be_bytes());
        out.extend(c.kind.stored().to_be_bytes());
        let last_at = c.last_at.micros();
        for v in [i64::from(c.day), c.total, c.events, c.last_value, last_at] {
            out.extend(8i32.to_be_bytes());
            out.extend(v.to_be_bytes());
        }
        out
    }

    /// A whole binary COPY: header (with `extension` bytes), rows, trailer.
    fn copied(rows: &[(AccountId, Cell)], extension: &[u8]) -> Vec<u8> {
        let mut out = COPY_SIGNATURE.to_vec();
        out.extend(0i32.to_be_bytes());
        out.extend((extension.len() as i32).to_be_bytes());
        out.extend(extension);
        for (id, c) in rows {
            out.extend(copied_row(*id, c));
        }
        out.extend((-1i16).to_be_bytes());
        out
    }

    fn decode(bytes: &[u8], chunk: usize) -> Result<Vec<(AccountId, Cell)>, String> {
        let mut decoder = CopyDecoder::default();
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk) {
            decoder.feed(piece, &mut out).map_err(|e| e.to_string())?;
        }
        decoder.finish().map_err(|e| e.to_string())?;
        Ok(out)
    }

    #[test]
    fn a_binary_copy_decodes_into_the_same_cells_however_it_is_split() -> Result<(), String> {
        let rows = vec![
            (
                AccountId(Uuid::from_u128(1)),
                cell(Kind::Signal(SignalType::Login), 1000, 5, 5, 1),
            ),
            (
                AccountId(Uuid::from_u128(u128::MAX)),
                cell(Kind::Expansion, 971, -250, 2, i64::MIN),
            ),
            (
                AccountId(Uuid::from_u128(7)),
                cell(Kind::Signal(SignalType::CsatAnswer), 0, i64::MAX, 0, 0),
            ),
        ];
        let bytes = copied(&rows, b"ext");
        for chunk in [1, 2, 7, 19, 64, bytes.len()] {
            assert_eq!(decode(&bytes, chunk)?, rows, "chunks of {chunk} bytes");
        }
        Ok(())
    }

    #[test]
    fn a_binary_copy_without_rows_is_empty() -> Result<(), String> {
        assert_eq!(decode(&copied(&[], b""), 5)?, Vec::new());
        Ok(())
    }

    #[test]
    fn a_binary_copy_cut_short_or_of_another_shape_is_an_error() {
        let rows = [(
            AccountId(Uuid::from_u128(3)),
            cell(Kind::Signal(SignalType::Login), 10, 1, 1, 1),
        )];
        let bytes = copied(&rows, b"");
        // No trailer, or half a row.
        assert!(decode(&bytes[..bytes.len() - 2], 4).is_err());
        assert!(decode(&bytes[..bytes.len() - 20], 4).is_err());
        // Not a binary COPY at all.
        assert!(decode(b"account_id,kind\n0000,1\n and more text", 8).is_err());
        // Six columns instead of seven.
        let mut six = bytes.clone();
        let at = COPY_SIGNATURE.len() + 8;
        six[at..at + 2].copy_from_slice(&6i16.to_be_bytes());
        assert!(decode(&six, 16).is_err());
        // A kind eight bytes wide.
        let mut wide = bytes;
        let kind_len = at + 2 + 4 + 36;
        wide[kind_len..kind_len + 4].copy_from_slice(&8i32.to_be_bytes());
        assert!(decode(&wide, 16).is_err());
    }
}
