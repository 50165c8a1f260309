//! Change-log entries, written in the same batch as the rows they describe and keyed
//! by `_seq`, so the log is in commit order and a reader can resume from any seq.

use kalamdb_storage::seq::Seq;

use crate::error::{EngineError, Result};
use crate::ids::StorageUid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Insert,
    Update,
    Delete,
}

impl ChangeKind {
    fn tag(self) -> u8 {
        match self {
            ChangeKind::Insert => 1,
            ChangeKind::Update => 2,
            ChangeKind::Delete => 3,
        }
    }
    fn from_tag(t: u8) -> Option<Self> {
        Some(match t {
            1 => ChangeKind::Insert,
            2 => ChangeKind::Update,
            3 => ChangeKind::Delete,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Insert => "INSERT",
            ChangeKind::Update => "UPDATE",
            ChangeKind::Delete => "DELETE",
        }
    }
}

/// One logged change, with the encoded new and old rows.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEntry {
    pub table: StorageUid,
    pub kind: ChangeKind,
    pub key: Vec<u8>,
    pub new_row: Option<Vec<u8>>,
    pub old_row: Option<Vec<u8>>,
}

fn put_bytes(buf: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => buf.extend_from_slice(&u32::MAX.to_le_bytes()),
        Some(b) => {
            buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
            buf.extend_from_slice(b);
        }
    }
}

fn get_bytes(buf: &mut &[u8]) -> Result<Option<Vec<u8>>> {
    let bad = || EngineError::Internal("corrupt change-log entry".into());
    if buf.len() < 4 {
        return Err(bad());
    }
    let n = u32::from_le_bytes(buf[..4].try_into().map_err(|_| bad())?);
    *buf = &buf[4..];
    if n == u32::MAX {
        return Ok(None);
    }
    let n = n as usize;
    if buf.len() < n {
        return Err(bad());
    }
    let out = buf[..n].to_vec();
    *buf = &buf[n..];
    Ok(Some(out))
}

pub fn entry_key(seq: Seq) -> Vec<u8> {
    seq.to_be_bytes().to_vec()
}

/// Encodes an entry from borrowed parts (the commit path), without building a
/// [`ChangeEntry`] first.
pub fn encode_entry(
    table: StorageUid,
    kind: ChangeKind,
    key: &[u8],
    new_row: Option<&[u8]>,
    old_row: Option<&[u8]>,
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(25 + key.len() + new_row.map_or(0, <[u8]>::len) + old_row.map_or(0, <[u8]>::len));
    buf.extend_from_slice(&table.0.to_le_bytes());
    buf.push(kind.tag());
    put_bytes(&mut buf, Some(key));
    put_bytes(&mut buf, new_row);
    put_bytes(&mut buf, old_row);
    buf
}

impl ChangeEntry {
    pub fn encode(&self) -> Vec<u8> {
        encode_entry(
            self.table,
            self.kind,
            &self.key,
            self.new_row.as_deref(),
            self.old_row.as_deref(),
        )
    }

    pub fn decode(mut buf: &[u8]) -> Result<Self> {
        let bad = || EngineError::Internal("corrupt change-log entry".into());
        if buf.len() < 9 {
            return Err(bad());
        }
        let table = StorageUid(u64::from_le_bytes(buf[..8].try_into().map_err(|_| bad())?));
        let kind = ChangeKind::from_tag(buf[8]).ok_or_else(bad)?;
        buf = &buf[9..];
        let key = get_bytes(&mut buf)?.ok_or_else(bad)?;
        let new_row = get_bytes(&mut buf)?;
        let old_row = get_bytes(&mut buf)?;
        Ok(Self {
            table,
            kind,
            key,
            new_row,
            old_row,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let e = ChangeEntry {
            table: StorageUid(9),
            kind: ChangeKind::Delete,
            key: vec![1, 2],
            new_row: None,
            old_row: Some(vec![3]),
        };
        assert_eq!(ChangeEntry::decode(&e.encode()).unwrap(), e);
    }
}
